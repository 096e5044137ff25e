"""Train-step time, peak memory and full-volume inference cost of SegGuidedNet vs baselines.

Every configuration runs in a fresh subprocess so its peak resident memory
(``resource.getrusage(...).ru_maxrss``) is its own. Results go to
``benchmarks/results/model_benchmark.{md,json}``. Run:

    python benchmarks/model_benchmark.py [--threads 2] [--steps 5] [--name model_benchmark]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results"
BRATS_SHAPE = (240, 240, 155)


def rss_mib() -> float:
    """Peak resident memory of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def current_rss_mib() -> float:
    with open("/proc/self/statm") as stream:
        return int(stream.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def build(spec: dict):
    import torch
    from monai.networks.nets import SegResNet

    from segguided_model.network import SegGuidedNet

    if spec["model"] == "segresnet":
        return SegResNet(3, spec["init_filters"], 4, 3, norm=("instance", {"affine": True}))
    return SegGuidedNet(**spec["fields"])


def worker_train(spec: dict) -> dict:
    import torch

    from segguided_model.losses import RegionDiceBCELoss, SegGuidedLoss
    from segguided_model.network import SegGuidedOutput

    torch.manual_seed(0)
    device = torch.device(spec["device"])
    model = build(spec).to(device)
    size, batch = spec["size"], spec["batch"]
    image = torch.randn(batch, 4, size, size, size, device=device)
    subregions = (torch.rand(batch, 3, size, size, size, device=device) > 0.8).float()
    regions = subregions.clone()
    seg_loss, guided_loss = RegionDiceBCELoss().to(device), SegGuidedLoss(attention_weight=0.1).to(device)
    optimiser = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    scaler = torch.amp.GradScaler(enabled=spec["amp"])
    baseline = current_rss_mib()

    def step() -> None:
        with torch.autocast(device_type=device.type, enabled=spec["amp"]):
            output = model(image)
            if isinstance(output, SegGuidedOutput):
                loss = guided_loss(output, regions, subregions).total
            else:
                loss = seg_loss(output.float(), regions)
        optimiser.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimiser)
        scaler.update()
        if device.type == "cuda":
            torch.cuda.synchronize()

    for _ in range(spec["warmup"]):
        step()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(spec["steps"]):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    result = {
        "parameters": sum(p.numel() for p in model.parameters()),
        "step_s": statistics.median(times),
        "step_s_all": times,
        "peak_rss_mib": rss_mib(),
        "rss_before_training_mib": baseline,
    }
    if device.type == "cuda":
        result["peak_cuda_mib"] = torch.cuda.max_memory_allocated() / 2**20
    return result


def worker_infer(spec: dict) -> dict:
    import torch

    from segguided_model.inference import predict_volume

    torch.manual_seed(0)
    device = torch.device(spec.get("device", "cpu"))
    model = build(spec)
    image = torch.randn(4, *BRATS_SHAPE)
    baseline = current_rss_mib()
    if device.type == "cuda":  # the first windows pay for cuDNN's kernel choice
        predict_volume(model, image[:, :128, :128, :128], roi_size=spec["roi"], device=device, amp=spec.get("amp", False))
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    prediction = predict_volume(
        model, image, roi_size=spec["roi"], overlap=spec["overlap"], device=device, amp=spec.get("amp", False)
    )
    elapsed = time.perf_counter() - start
    result = {
        "parameters": sum(p.numel() for p in model.parameters()),
        "inference_s": elapsed,
        "peak_rss_mib": rss_mib(),
        "rss_before_inference_mib": baseline,
        "output_shape": list(prediction.probabilities.shape),
    }
    if device.type == "cuda":
        result["peak_cuda_mib"] = torch.cuda.max_memory_allocated() / 2**20
    return result


def run_isolated(spec: dict, threads: int) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    result = subprocess.run(
        [sys.executable, __file__, "--worker", json.dumps(spec), "--threads", str(threads)],
        capture_output=True, text=True, env=env, cwd=Path(__file__).parent.parent,
    )
    if result.returncode != 0:
        raise RuntimeError(f"benchmark worker {spec['name']} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def machine() -> dict:
    import monai
    import torch

    cpu = platform.processor() or "unknown"
    try:
        with open("/proc/cpuinfo") as stream:
            cpu = next(line.split(":", 1)[1].strip() for line in stream if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    info = {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch": torch.__version__,
        "monai": monai.__version__,
        "python": platform.python_version(),
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def matched_segresnet_filters(target: int) -> int:
    from monai.networks.nets import SegResNet

    def count(filters: int) -> int:
        return sum(p.numel() for p in SegResNet(3, filters, 4, 3, norm=("instance", {"affine": True})).parameters())

    return min(range(4, 65), key=lambda f: abs(count(f) - target))


def plan(args) -> tuple[list[dict], list[dict]]:
    from segguided_model.network import SegGuidedNet

    common = {"device": "cpu", "size": 64, "batch": args.batch, "amp": False, "warmup": 2, "steps": args.steps}
    train = []
    for width, levels in dict.fromkeys(((args.width, 4), (8, 4))):
        fields = {"base_width": width, "levels": levels}
        train.append({**common, "name": f"SegGuidedNet w{width} L{levels}", "model": "segguided", "fields": fields})
        train.append({**common, "name": f"no-gate w{width} L{levels}", "model": "segguided", "fields": {**fields, "attention_gates": False}})
    # the CPU simulation configuration at its own patch size
    simulation = {**common, "size": 48, "model": "segguided"}
    train.append({**simulation, "name": "SegGuidedNet w8 L4 48³", "fields": {"base_width": 8, "levels": 4}})
    train.append({**simulation, "name": "no-gate w8 L4 48³", "fields": {"base_width": 8, "levels": 4, "attention_gates": False}})
    target = sum(p.numel() for p in SegGuidedNet(base_width=args.width, levels=4).parameters())
    filters = matched_segresnet_filters(target)
    train.append({**common, "name": f"SegResNet f{filters}", "model": "segresnet", "init_filters": filters})
    import torch

    if torch.cuda.is_available():
        cuda = {**common, "device": "cuda", "size": 128, "amp": True, "batch": 2, "steps": 10, "warmup": 3}
        train.append({**cuda, "name": "CUDA SegGuidedNet default", "model": "segguided", "fields": {}})
        train.append({**cuda, "name": "CUDA no-gate default", "model": "segguided", "fields": {"attention_gates": False}})
        full = sum(p.numel() for p in SegGuidedNet().parameters())
        train.append({**cuda, "name": "CUDA SegResNet matched", "model": "segresnet", "init_filters": matched_segresnet_filters(full)})
    infer = [
        {"name": f"inference w{args.width} L4 roi{args.roi}", "model": "segguided", "fields": {"base_width": args.width, "levels": 4},
         "roi": args.roi, "overlap": args.overlap},
    ]
    if torch.cuda.is_available():
        infer.append({"name": f"CUDA inference default roi{args.roi} AMP", "model": "segguided", "fields": {},
                      "roi": args.roi, "overlap": args.overlap, "device": "cuda", "amp": True})
    return train, infer


def cuda_peak(result: dict) -> str:
    """``", CUDA peak N MiB"`` for a result measured on a GPU, else nothing."""
    return f", CUDA peak {result['peak_cuda_mib']:.0f} MiB" if "peak_cuda_mib" in result else ""


def ratio(results: dict, name: str, baseline: str, key: str) -> float:
    return results[name][key] / results[baseline][key]


def write_report(info: dict, args, train: dict, infer: dict) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    payload = {"machine": info, "settings": vars(args), "train": train, "inference": infer}
    (RESULTS / f"{args.name}.json").write_text(json.dumps(payload, indent=2) + "\n")
    lines = [
        "# SegGuidedNet model benchmark",
        "",
        f"Machine: {info['cpu']}, {info['cores']} cores" + (f", {info['gpu']}" if "gpu" in info else "")
        + f"; torch {info['torch']}, MONAI {info['monai']}, Python {info['python']}.",
        *(["", f"Note: {args.note}"] if args.note else []),
        "",
        f"Torch threads: {args.threads}; {args.rounds} alternating rounds, fastest kept. Each configuration ran in a fresh process; peak memory is that "
        "process's `ru_maxrss` (includes the interpreter and torch), 'train Δ' is peak minus the "
        "resident memory after building the model and data.",
        "",
        "## Train step (SGD, loss + backward + step; median of measured steps)",
        "",
        "| configuration | params | input | step s | peak RSS MiB | train Δ MiB | step vs no-gate | peak vs no-gate | Δ vs no-gate |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, r in train.items():
        spec = r["spec"]
        base = name.replace("SegGuidedNet", "no-gate") if "SegGuidedNet" in name else None
        if base in train and "peak_cuda_mib" in r:  # on a GPU, what counts is the GPU's memory
            rel = f"{ratio(train, name, base, 'step_s'):.3f} | {ratio(train, name, base, 'peak_cuda_mib'):.3f} (CUDA) | n/a"
        elif base in train:
            rel = (
                f"{ratio(train, name, base, 'step_s'):.3f} | {ratio(train, name, base, 'peak_rss_mib'):.3f} | "
                f"{(r['peak_rss_mib'] - r['rss_before_training_mib']) / (train[base]['peak_rss_mib'] - train[base]['rss_before_training_mib']):.3f}"
            )
        else:
            rel = "| |"
        lines.append(
            f"| {name}{cuda_peak(r)} | {r['parameters']:,} | {spec['batch']}×4×{spec['size']}³{' AMP' if spec['amp'] else ''} | "
            f"{r['step_s']:.3f} | {r['peak_rss_mib']:.0f} | {r['peak_rss_mib'] - r['rss_before_training_mib']:.0f} | {rel} |"
        )
    segresnet = next(n for n in train if n.startswith("SegResNet"))
    gated = f"SegGuidedNet w{args.width} L4"
    lines += [
        "",
        f"SegGuidedNet w{args.width} L4 step / {segresnet} step: {ratio(train, gated, segresnet, 'step_s'):.3f} "
        f"({train[gated]['parameters']:,} vs {train[segresnet]['parameters']:,} parameters; SegResNet's "
        "init_filters chosen to match the parameter count as closely as possible).",
    ]
    if "CUDA SegResNet matched" in train:
        lines += [
            "",
            f"CUDA SegGuidedNet default step / CUDA SegResNet matched step: "
            f"{ratio(train, 'CUDA SegGuidedNet default', 'CUDA SegResNet matched', 'step_s'):.3f} "
            f"({train['CUDA SegGuidedNet default']['parameters']:,} vs {train['CUDA SegResNet matched']['parameters']:,} parameters).",
        ]
    lines += [
        "",
        "## Whole-volume inference (240×240×155, sliding window, Gaussian blending)",
        "",
        "CPU rows: 'fits 8 GiB' is about the process's RAM; CUDA rows also give the GPU's peak.",
        "",
        "| configuration | params | roi | overlap | seconds | peak RSS MiB | fits 8 GiB |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    for name, r in infer.items():
        lines.append(
            f"| {name}{cuda_peak(r)} | {r['parameters']:,} | {r['spec']['roi']} | {r['spec']['overlap']} | {r['inference_s']:.1f} | "
            f"{r['peak_rss_mib']:.0f} | {'yes' if r['peak_rss_mib'] < 8192 else 'NO'} |"
        )
    (RESULTS / f"{args.name}.md").write_text("\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=2, help="times each train configuration runs, alternating")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--width", type=int, default=16, help="base width of the CPU comparison network")
    parser.add_argument("--roi", type=int, default=128)
    parser.add_argument("--overlap", type=float, default=0.25)
    parser.add_argument("--name", default="model_benchmark", help="results file stem under benchmarks/results/")
    parser.add_argument("--note", default="", help="written under the machine line (e.g. that the CPU was shared)")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    if args.worker:
        spec = json.loads(args.worker)
        result = worker_infer(spec) if "roi" in spec else worker_train(spec)
        print(json.dumps(result))
        return
    train_specs, infer_specs = plan(args)
    train, infer = {}, {}
    # Configurations alternate over the rounds, and each keeps its fastest round, so a
    # burst of load from other processes does not skew one configuration only.
    for round_index in range(args.rounds):
        for spec in train_specs:
            result = {**run_isolated(spec, args.threads), "spec": spec}
            print(f"round {round_index + 1} {spec['name']}: {result['step_s']:.3f} s/step, peak {result['peak_rss_mib']:.0f} MiB{cuda_peak(result)}", flush=True)
            previous = train.get(spec["name"])
            if previous is None or result["step_s"] < previous["step_s"]:
                train[spec["name"]] = result
    for spec in infer_specs:
        infer[spec["name"]] = {**run_isolated(spec, args.threads), "spec": spec}
        print(f"{spec['name']}: {infer[spec['name']]['inference_s']:.1f} s, peak {infer[spec['name']]['peak_rss_mib']:.0f} MiB", flush=True)
    write_report(machine(), args, train, infer)
    print((RESULTS / f"{args.name}.md").read_text())


if __name__ == "__main__":
    main()
