"""The HTTP detection service on Ray Serve around :class:`foclip.runtime.Detector` (docs/serve.md).

* :mod:`foclip.serve.config`: :class:`ServeConfig` and :class:`Limits` (no Ray);
* :mod:`foclip.serve.core`: the bounds every request passes (key, limits, pixel budget, deadline; no protocol, no Ray);
* :mod:`foclip.serve.v1`, :mod:`foclip.serve.v2`: the wire protocols (request -> items, results -> response);
* :mod:`foclip.serve.app`: the HTTP routes onto the protocols (also an app without Ray for tests);
* :mod:`foclip.serve.edge`: bounds in Ray Serve's proxy before any route (heads, bodies, v2 JSON, Ray's ``/-/`` routes);
* :mod:`foclip.serve.auth`, :mod:`foclip.serve.json_bounds`: the API key check and the JSON bounds (stdlib only:
  the proxy uses them too);
* :mod:`foclip.serve.metrics`: the Prometheus series, via ``ray.util.metrics``;
* :mod:`foclip.serve.deployment`: the Ray Serve deployment (imports Ray Serve and FastAPI);
* :mod:`foclip.serve.service`: start / stop (embedded local Ray or an existing cluster).

Importing this package imports nothing heavy.
"""
