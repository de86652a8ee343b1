"""Entry point for the per-node download test: every launched process runs the harness's download step (the runner's
`dist.on_local_main(download_models)`) for hub models, with the two hub calls replaced by ones that record who made
them and return a tiny model's folder; then checks, inside the worker, the world size it was launched for.

    download_worker.py OUT_DIR
"""

import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main() -> None:
    out = Path(sys.argv[1])
    import diffusers
    import huggingface_hub

    import bench_lib.runner as runner
    from bench_lib import config_from_dict
    from bench_lib.distributed import Distributed
    from bench_lib.models import resolve_model

    rank, node = os.environ["RANK"], os.environ.get("GROUP_RANK", "0")

    def record(call: str, name: str, kwargs: dict) -> None:
        with open(out / f"calls-{rank}.jsonl", "a") as f:
            f.write(json.dumps({"rank": int(rank), "node": int(node), "call": call, "name": name,
                                "revision": kwargs.get("revision")}) + "\n")

    def pipeline_download(cls, name, **kwargs):
        record("DiffusionPipeline.download", name, kwargs)
        return resolve_model("tiny:qwen-image-edit")

    def snapshot_download(name, **kwargs):
        record("snapshot_download", name, kwargs)
        return resolve_model("tiny:qwen3-vl")

    diffusers.DiffusionPipeline.download = classmethod(pipeline_download)
    huggingface_hub.snapshot_download = snapshot_download
    cfg = config_from_dict({"dataset": "data/demo/manifest.jsonl", "editor_model": "org/editor",
                            "editor_revision": "v2", "judge_model": "org/judge", "output_dir": str(out / "run")})
    variant = config_from_dict({**cfg.to_dict(), "lora_scale": 0.5})  # a sweep's variant: the same base model
    dist = Distributed(timeout_s=120)
    runner.download_models_on_each_node(dist, cfg, [cfg, variant])
    assert dist.world_size == int(os.environ["BENCH_EXPECT_WORLD_SIZE"]), dist.world_size
    (out / f"worker-{rank}.json").write_text(json.dumps({"rank": dist.rank, "world_size": dist.world_size,
                                                         "node": int(node), "local_main": dist.is_local_main}))
    dist.close()


if __name__ == "__main__":
    main()
