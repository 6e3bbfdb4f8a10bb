"""Local HTTP servers on 127.0.0.1 that speak real services' wire formats, for loader tests."""
