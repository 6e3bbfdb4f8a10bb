"""Promotion: a walk-forward run that passes the gates becomes a versioned strategy artifact.

```python
from workbench.promote import promote, load_artifact, Registry
res = promote("wf-sma_cross-46038233c9", gates="pipelines/promotion.yaml")  # PromotionRejected: a gate failed
res.artifact.ref, res.verdicts                    # 'sma_cross-btc_usdt-1h@v1', [Verdict(...), ...]
load_artifact("sma_cross-btc_usdt-1h@1").params   # what the paper runner trades
Registry().list(); Registry().rollback("sma_cross-btc_usdt-1h", reason="...")
```
"""

from workbench.promote.artifact import Artifact
from workbench.promote.gates import DEFAULT_GATES, Gate, GateOp, GateSet, Verdict, load_gates
from workbench.promote.promotion import PromotionResult, promote
from workbench.promote.registry import Registry, load_artifact

__all__ = [
    "DEFAULT_GATES",
    "Artifact",
    "Gate",
    "GateOp",
    "GateSet",
    "PromotionResult",
    "Registry",
    "Verdict",
    "load_artifact",
    "load_gates",
    "promote",
]
