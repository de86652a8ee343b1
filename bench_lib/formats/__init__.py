"""Dataset formats: how `dataset` is read (bench_lib.formats.base). The generic ones (`manifest`: a JSON/JSONL
manifest; `datasets`: a hub or local dataset, a parquet or CSV file) need a column mapping when their names differ
from the canonical ones; the public benchmarks' own files (`re_edit`, `risebench`, `kris`, `gedit`) are read
unchanged, each with its own mapping and id rule (each module names its source).

`auto` (the default) recognises them by their files and fields. In every format an image column may hold a
path (relative to the data, never outside it), image bytes, or a base64 string or data URI (decoded under the
same pixel cap, checked before any pixel is decoded). One module per format, registered in
bench_lib.registry.FORMATS; this package's `__init__` imports none of them.
"""
