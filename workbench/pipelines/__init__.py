"""Pipelines: declarative jobs (sync, report, sweep, walk-forward, promote, paper) with a cron schedule."""

from workbench.pipelines.run import PipelineFailed, PipelineRun, read_history, run_pipeline
from workbench.pipelines.schedule import Clock, Scheduler
from workbench.pipelines.spec import Pipeline, Step, find_pipeline, load_pipeline, parse_cron, pipeline_files

__all__ = [
    "Clock",
    "Pipeline",
    "PipelineFailed",
    "PipelineRun",
    "Scheduler",
    "Step",
    "find_pipeline",
    "load_pipeline",
    "parse_cron",
    "pipeline_files",
    "read_history",
    "run_pipeline",
]
