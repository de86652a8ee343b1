"""Tiny, randomly initialised models of the real classes, for the offline demo recipe and the tests
(bench_lib.demo.tiny, bench_lib.demo.tiny_flux). Imported only when a `tiny:` model is built
(bench_lib.models.TINY_MODELS names the builders): a run of real models never imports this package."""
