"""Train-step time, peak memory and full-volume inference cost of SegGuidedNet vs baselines.

Every configuration runs in a fresh subprocess so its peak resident memory
(``VmHWM`` of ``/proc/self/status``) is its own. Results go to
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
    """Peak resident memory of this process's own address space so far.

    ``VmHWM``, not ``getrusage``'s ``ru_maxrss``: Linux carries ``ru_maxrss`` over from
    the parent at fork, so a worker started by this script (which has torch and a
    full-size network loaded, about 640 MiB) never reported less than its parent's size.
    """
    try:
        with open("/proc/self/status") as stream:
            return next(int(line.split()[1]) for line in stream if line.startswith("VmHWM:")) / 1024
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def current_rss_mib() -> float:
    with open("/proc/self/statm") as stream:
        return int(stream.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def build(spec: dict):
    from monai.networks.nets import SegResNet

    from segguided_model.network import SegGuidedNet

    if spec["model"] == "segresnet":
        return SegResNet(3, spec["init_filters"], 4, 3, norm=("instance", {"affine": True}))
    return SegGuidedNet(**spec["fields"])


def make_train_step(spec: dict):
    """Build the model, data, loss and optimiser of ``spec``; return ``(model, step)``.

    ``step()`` runs one training step (forward, loss, backward, optimiser step) and waits
    for the GPU when there is one.
    """
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

    return model, step


def worker_train(spec: dict) -> dict:
    import torch

    device = torch.device(spec["device"])
    model, step = make_train_step(spec)
    baseline = current_rss_mib()
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


def worker_pair(pair: dict) -> dict:
    """Time two configurations in one process, alternating their steps.

    The machine's speed drifts over minutes (a shared VM: the same configuration has
    measured 40 % apart in two rounds), and a drift hits both sides of an alternating pair
    alike, so the ratio of their step times stays steady where the absolute times do not.
    """
    (name_a, step_a), (name_b, step_b) = ((spec["name"], make_train_step(spec)[1]) for spec in pair["specs"])
    for _ in range(pair["warmup"]):
        step_a(), step_b()
    times = {name_a: [], name_b: []}
    for _ in range(pair["steps"]):
        for name, step in ((name_a, step_a), (name_b, step_b)):
            start = time.perf_counter()
            step()
            times[name].append(time.perf_counter() - start)
    ratios = [a / b for a, b in zip(times[name_a], times[name_b])]
    quartiles = statistics.quantiles(ratios, n=4)
    return {
        "times": times,
        "ratio_of_medians": statistics.median(times[name_a]) / statistics.median(times[name_b]),
        "median_of_step_ratios": statistics.median(ratios),
        "step_ratio_quartiles": [quartiles[0], quartiles[2]],
    }


def worker_infer(spec: dict) -> dict:
    import torch

    from segguided_model.inference import SlidingWindow, predict_volume

    torch.manual_seed(0)
    device = torch.device(spec.get("device", "cpu"))
    model = build(spec)
    image = torch.randn(4, *BRATS_SHAPE)  # non-zero everywhere: the whole grid is "brain"
    window = SlidingWindow(roi_size=spec["roi"], overlap=spec["overlap"], amp=spec.get("amp", False), batch_size=1)
    baseline = current_rss_mib()
    if device.type == "cuda":  # the first windows pay for cuDNN's kernel choice
        predict_volume(model, image[:, :128, :128, :128], window, device)
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    prediction = predict_volume(model, image, window, device)
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


# glibc keeps freed blocks below its (self-raising, up to 32 MiB) mmap threshold for reuse,
# so a process's peak RSS depended on allocation order: the same no-gate run measured 80 MiB
# apart on two runs. Mapping every allocation over 128 KiB fresh and unmapping it on free
# makes peak RSS the peak of live memory, the same on every run (and steps slower: paging).
EXACT_MEMORY_ENV = {"MALLOC_MMAP_THRESHOLD_": "131072"}


def run_isolated(spec: dict, threads: int, extra_env: dict | None = None) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads), **(extra_env or {}))
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


def plan(args) -> tuple[list[dict], list[dict], list[dict]]:
    from segguided_model.network import SegGuidedNet

    common = {"device": "cpu", "size": 64, "batch": args.batch, "amp": False, "warmup": 2, "steps": args.steps}
    train = []
    import torch

    if args.cuda_only and not torch.cuda.is_available():
        raise SystemExit("--cuda-only: no CUDA device here; run it on a GPU machine")
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
    if args.cuda_only:
        train = []
    if torch.cuda.is_available():
        cuda = {**common, "device": "cuda", "size": 128, "amp": True, "batch": 2, "steps": 10, "warmup": 3}
        train.append({**cuda, "name": "CUDA SegGuidedNet default", "model": "segguided", "fields": {}})
        train.append({**cuda, "name": "CUDA no-gate default", "model": "segguided", "fields": {"attention_gates": False}})
        full = sum(p.numel() for p in SegGuidedNet().parameters())
        train.append({**cuda, "name": "CUDA SegResNet matched", "model": "segresnet", "init_filters": matched_segresnet_filters(full)})
    infer = [] if args.cuda_only else [
        {"name": f"inference w{args.width} L4 roi{args.roi}", "model": "segguided", "fields": {"base_width": args.width, "levels": 4},
         "roi": args.roi, "overlap": args.overlap},
    ]
    if torch.cuda.is_available():
        infer.append({"name": f"CUDA inference default roi{args.roi} AMP", "model": "segguided", "fields": {},
                      "roi": args.roi, "overlap": args.overlap, "device": "cuda", "amp": True})
    return train, pairs_of(train, args.pair_steps), infer


def no_gate_twin(name: str, names) -> str | None:
    """The name of the no-gate configuration that ``name`` (a gated one) is compared with."""
    twin = name.replace("SegGuidedNet", "no-gate") if "SegGuidedNet" in name else None
    return twin if twin in names else None


def pairs_of(train: list[dict], steps: int) -> list[dict]:
    """Paired timings: every gated configuration against its no-gate twin, and each
    SegResNet against the gated network it was matched to (same device)."""
    by_name = {spec["name"]: spec for spec in train}
    pairs = []
    for name, spec in by_name.items():
        if twin := no_gate_twin(name, by_name):
            pairs.append((spec, by_name[twin]))
    gated_cpu = next(spec for spec in train if spec["model"] == "segguided" and spec["device"] == "cpu")
    for spec in train:
        if spec["model"] == "segresnet":
            gated = gated_cpu if spec["device"] == "cpu" else by_name["CUDA SegGuidedNet default"]
            pairs.append((gated, spec))
    return [
        {"name": f"{a['name']} / {b['name']}", "specs": [a, b], "warmup": 2, "steps": steps}
        for a, b in pairs
    ]


def cuda_peak(result: dict) -> str:
    """``", CUDA peak N MiB"`` for a result measured on a GPU, else nothing."""
    return f", CUDA peak {result['peak_cuda_mib']:.0f} MiB" if "peak_cuda_mib" in result else ""


def ratio(results: dict, name: str, baseline: str, key: str) -> float:
    return results[name][key] / results[baseline][key]


def write_report(info: dict, args, train: dict, paired: dict, infer: dict) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    payload = {"machine": info, "settings": vars(args), "train": train, "paired": paired, "inference": infer}
    (RESULTS / f"{args.name}.json").write_text(json.dumps(payload, indent=2) + "\n")
    lines = [
        "# SegGuidedNet model benchmark",
        "",
        f"Machine: {info['cpu']}, {info['cores']} cores" + (f", {info['gpu']}" if "gpu" in info else "")
        + f"; torch {info['torch']}, MONAI {info['monai']}, Python {info['python']}.",
        *(["", f"Note: {args.note}"] if args.note else []),
        "",
        f"Torch threads: {args.threads}; {args.rounds} alternating rounds, fastest kept. "
        "Each configuration ran in a fresh process; peak memory is that "
        "process's `VmHWM` (includes the interpreter and torch), 'train Δ' is peak minus the "
        "resident memory after building the model and data.",
        "",
        "## Train step, each configuration alone (SGD, loss + backward + step; median of measured steps)",
        "",
        "These runs measure memory: every allocation over 128 KiB is mapped fresh and unmapped on free "
        "(`MALLOC_MMAP_THRESHOLD_=131072`), so peak RSS is the peak of live memory and does not "
        "depend on what glibc happened to keep for reuse. That costs page faults, and the step times "
        "in this table also compare runs minutes apart on a drifting machine: the paired timings "
        "below are the ones to read for time.",
        "",
        "| configuration | params | input | step s | peak RSS MiB | train Δ MiB | step vs no-gate | peak vs no-gate | Δ vs no-gate |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, r in train.items():
        spec = r["spec"]
        base = no_gate_twin(name, train)
        if base and "peak_cuda_mib" in r:  # on a GPU, what counts is the GPU's memory
            rel = f"{ratio(train, name, base, 'step_s'):.3f} | {ratio(train, name, base, 'peak_cuda_mib'):.3f} (CUDA) | n/a"
        elif base:
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
    lines += [
        "",
        "## Paired step time (two configurations in one process, alternating steps)",
        "",
        "A drift of the machine's speed hits both sides of a pair alike; each step of the first is "
        "divided by the second's step right after it, and the median of those ratios is the figure "
        "to read (the quartiles show how much single steps scatter). SegResNet's init_filters "
        "is chosen to match the gated network's parameter count as closely as possible.",
        "",
        "| first / second | params | steps each | first s | second s | ratio of medians | median of step ratios | step ratios 25–75 % |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, r in paired.items():
        first, second = r["spec"]["specs"]
        params = " / ".join(f"{train[spec['name']]['parameters']:,}" for spec in (first, second))
        lines.append(
            f"| {name} | {params} | {r['spec']['steps']} | {statistics.median(r['times'][first['name']]):.3f} | "
            f"{statistics.median(r['times'][second['name']]):.3f} | {r['ratio_of_medians']:.3f} | {r['median_of_step_ratios']:.3f} | "
            f"{r['step_ratio_quartiles'][0]:.3f}–{r['step_ratio_quartiles'][1]:.3f} |"
        )
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
    parser.add_argument("--rounds", type=int, default=1, help="times each train configuration runs alone, alternating")
    parser.add_argument("--pair-steps", type=int, default=30, help="alternating steps of each side in the paired timings")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--width", type=int, default=16, help="base width of the CPU comparison network")
    parser.add_argument("--roi", type=int, default=128)
    parser.add_argument("--overlap", type=float, default=0.25)
    parser.add_argument("--name", default="model_benchmark", help="results file stem under benchmarks/results/")
    parser.add_argument("--note", default="", help="written under the machine line (e.g. that the CPU was shared)")
    parser.add_argument("--cuda-only", action="store_true", help="only the CUDA rows (a GPU machine's short run)")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    if args.worker:
        spec = json.loads(args.worker)
        result = worker_pair(spec) if "specs" in spec else worker_infer(spec) if "roi" in spec else worker_train(spec)
        print(json.dumps(result))
        return
    train_specs, pair_specs, infer_specs = plan(args)
    train, paired, infer = {}, {}, {}
    # Configurations alternate over the rounds, and each keeps its fastest round, so a
    # burst of load from other processes does not skew one configuration only (memory is
    # the same in every round: EXACT_MEMORY_ENV).
    for round_index in range(args.rounds):
        for spec in train_specs:
            result = {**run_isolated(spec, args.threads, EXACT_MEMORY_ENV), "spec": spec}
            print(f"round {round_index + 1} {spec['name']}: {result['step_s']:.3f} s/step, peak {result['peak_rss_mib']:.0f} MiB{cuda_peak(result)}", flush=True)
            previous = train.get(spec["name"])
            if previous is None or result["step_s"] < previous["step_s"]:
                train[spec["name"]] = result
    for pair in pair_specs:
        paired[pair["name"]] = {**run_isolated(pair, args.threads), "spec": pair}
        print(f"paired {pair['name']}: median of step ratios {paired[pair['name']]['median_of_step_ratios']:.3f}", flush=True)
    for spec in infer_specs:
        infer[spec["name"]] = {**run_isolated(spec, args.threads), "spec": spec}
        print(f"{spec['name']}: {infer[spec['name']]['inference_s']:.1f} s, peak {infer[spec['name']]['peak_rss_mib']:.0f} MiB", flush=True)
    write_report(machine(), args, train, paired, infer)
    print((RESULTS / f"{args.name}.md").read_text())


if __name__ == "__main__":
    main()
