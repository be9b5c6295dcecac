"""The HTTP detection service on Ray Serve around :class:`foclip.runtime.Detector` (docs/serve.md).

* :mod:`foclip.serve.config`: :class:`ServeConfig` and :class:`Limits` (no Ray);
* :mod:`foclip.serve.http`: request handling as plain code (limits, parsing, status codes; no Ray);
* :mod:`foclip.serve.metrics`: the Prometheus series, via ``ray.util.metrics``;
* :mod:`foclip.serve.deployment`: the Ray Serve deployment (imports Ray Serve and FastAPI);
* :mod:`foclip.serve.service`: start / stop (embedded local Ray or an existing cluster).

Importing this package imports nothing heavy.
"""
