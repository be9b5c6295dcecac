"""Detection at dataset scale: ``foclip detect BUNDLE INPUTS... --ray --out DIR`` on Ray Data.

* :mod:`foclip.batch.shards`: the input shards (WebDataset ``.tar`` files, parquet files, chunks of
  image files) and how one shard is read into ``(id, bytes-or-path)`` items; standard library and
  pyarrow only.
* :mod:`foclip.batch.scan`: the Ray Data pipeline (one :class:`foclip.runtime.Detector` per actor,
  a shard per call) and the driver that writes one output file per shard, resumably.

Nothing in :mod:`foclip.runtime` imports this package: the runtime-only install stays free of Ray
and pyarrow (``pip install 'foclip[batch]'`` adds them).
"""
