"""Why BSN's architecture does or does not beat random ones of its cost: the numbers behind docs/diagnosis.md.

    python benchmarks/diagnose_bsn.py --compare-out RUN [--compare-out RUN2 ...] [--seed 0] [--out diag] [--append]
    python benchmarks/diagnose_bsn.py --planted [--append]   # the yardstick: the planted test's signal

``RUN`` is a finished ``nni-bsn compare`` folder (``compare.json``) on Fashion-MNIST with BSN and random rows at one
budget. The script runs one BSN search with the same settings (all 55,000 images, the run's image size, space,
epochs, batch and budget), recording every architecture step, then reports:

- **gradient signal-to-noise**: per gate, over windows of 100 steps, |mean| / std of the logits' gradient as BSN
  computes it (REINFORCE on the loss plus the local penalty gradient), and of its loss part alone;
- **what the architecture optimizer does with it**: per gate, net displacement of the logit over the run divided
  by the path length (sum of |step|): 1 is a straight drift, about 1 / sqrt(steps) a random walk;
- **commitment**: when each gate's keep-probability leaves (0.1, 0.9) for good, and how sure the loss's push on it,
  summed up to then and over the whole search, was of its sign (a t-statistic; ``--planted`` gives the yardstick:
  the planted path's, and every path's on labels of pure noise);
- **seed agreement**: the mean pairwise agreement of kept gates between the run's seeds, for every row kind
  (BSN's exports, random architectures of the same cost);
- **ranking by the shared weights**: Kendall tau between each of the run's architectures' inherited validation
  accuracy on the trained super network (BatchNorm re-estimated, :class:`~nni_bsn.strategy.evolution.SupernetScore`)
  and its accuracy retrained from scratch in the run, within each row kind and over all of them.

``--append`` adds the numbers to benchmarks/RESULTS.md. One torch thread.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
from _results import append  # noqa: E402

WINDOW = 100
#: A gate has committed once its keep-probability stays outside (1 - COMMITTED, COMMITTED) to the end of the search.
COMMITTED = 0.9


def _record_steps(store: dict) -> None:
    """Patch BSN's architecture update to keep every step's logits, gradient and loss-only gradient."""
    from nni_bsn.strategy import lightning

    original = lightning.BSNLightningModule._step_distribution
    surrogate = lightning.local_penalty_surrogate

    def keep_penalty(*args, **kwargs):
        store["_penalty"] = surrogate(*args, **kwargs)
        return store["_penalty"]

    lightning.local_penalty_surrogate = keep_penalty

    def recording(self, arch_loss):
        logits = self.distribution.gate_logits
        before = logits.detach().clone()
        original(self, arch_loss)
        store.setdefault("grad", []).append(self._recorded_grad)
        store.setdefault("penalty_grad", []).append(self._recorded_penalty_grad)
        store.setdefault("step", []).append((logits.detach() - before).tolist())
        store.setdefault("logits", []).append(before.tolist())

    def gradient(of, logits) -> list[float]:
        (g,) = torch.autograd.grad(of, [logits], retain_graph=True, allow_unused=True)
        return (g if g is not None else torch.zeros_like(logits)).tolist()

    def grad_hook(self, arch_loss):
        logits = self.distribution.gate_logits
        self._recorded_grad = gradient(arch_loss, logits)
        penalty = store.pop("_penalty", None)
        self._recorded_penalty_grad = (
            gradient(penalty, logits) if penalty is not None else [0.0] * len(logits)
        )
        return recording(self, arch_loss)

    lightning.BSNLightningModule._step_distribution = grad_hook


def _lock_in(store: dict, loss_only: list[list[float]]) -> dict[str, float]:
    """After the first epoch: the share of each part's push (weighted by its size) that drives a gate towards the
    side it is already on (keep-probability above 0.5: on); 0.5 when a part ignores the gates' states. The penalty's
    push comes from its exact local gradient, the loss's from REINFORCE."""
    first = len(loss_only) // 3
    side = torch.tensor(store["logits"][first:]).sign()  # +1: the gate is on more often than not
    out = {}
    for name, rows in (("penalty", store["penalty_grad"]), ("loss", loss_only)):
        push = -torch.tensor(rows[first:])  # + : towards on (a descent step raises the logit)
        towards = (push.sign() == side).float()
        out[name] = float((towards * push.abs()).sum() / push.abs().sum().clamp_min(1e-12))
    return out


def _t_stat(x: torch.Tensor) -> float:
    """|sum| / (std * sqrt(n)) of ``n`` per-step pushes: how sure their sum is of its sign (nan below 2 steps)."""
    if len(x) < 2 or float(x.std()) == 0.0:
        return math.nan
    return float(x.sum().abs() / (x.std() * math.sqrt(len(x))))


def _commitment(store: dict, loss_only: list[list[float]]) -> dict[str, float]:
    """When the distribution commits and how much the loss had said by then. Per gate: the step after which its
    keep-probability stays outside (0.1, 0.9) to the end, the t-statistic of the loss's push summed up to that step
    (:func:`_t_stat`) and whether the side it commits to (its final state) is the side that push points to; the same
    over the whole search. Medians over gates (the step as a share of the search), agreements as shares of gates."""
    logits = torch.tensor(store["logits"])
    push = -torch.tensor(loss_only)  # + : towards on
    steps = len(logits)
    p = torch.sigmoid(logits)
    open_ = (p > 1 - COMMITTED) & (p < COMMITTED)
    index = torch.arange(steps).unsqueeze(1).expand_as(open_)
    commit = (torch.where(open_, index, torch.full_like(index, -1)).max(0).values + 1).tolist()
    side = logits[-1].sign()
    at, whole, agree_at, agree_whole = [], [], [], []
    for g, n in enumerate(commit):
        at.append(_t_stat(push[:n, g]))
        whole.append(_t_stat(push[:, g]))
        if n < steps:  # committed before the end
            agree_at.append(float(push[:n, g].sum().sign() == side[g]))
        agree_whole.append(float(push[:, g].sum().sign() == side[g]))

    def median(values: list[float]) -> float:
        values = [v for v in values if math.isfinite(v)]
        return statistics.median(values) if values else math.nan

    return {
        "commit_step": median([n / steps for n in commit]),
        "committed": sum(n < steps for n in commit) / len(commit),
        "t_at_commit": median(at),
        "t_whole": median(whole),
        "agree_at_commit": statistics.mean(agree_at) if agree_at else math.nan,
        "agree_whole": statistics.mean(agree_whole),
    }


def _score_archs_at_end(archs: list[dict], store: dict) -> None:
    """Patch the end of training to score ``archs`` on the trained super network."""
    from nni_bsn.strategy import lightning
    from nni_bsn.strategy.evolution import EvolutionSettings, supernet_score

    original = lightning.BSNLightningModule.on_train_end

    def on_train_end(self):
        score = supernet_score(self, EvolutionSettings(val_batches=10_000))  # the whole validation split
        try:
            store["inherited"] = [score(self.prune(a)) for a in archs]
        finally:
            score.restore()
        original(self)

    lightning.BSNLightningModule.on_train_end = on_train_end


def _search(run: dict, seed: int, workdir: Path, options: dict) -> None:
    """One BSN search with the comparison's own settings (its CompareConfig's search part), at ``seed``."""
    import dataclasses

    from nni_bsn.jobs.config import CompareConfig
    from nni_bsn.jobs.search import run_search

    shared = CompareConfig.from_dict(run["config"]).search_config()
    cfg = dataclasses.replace(shared, seed=seed, onnx=False, resume=False, out=str(workdir), **options)
    run_search(cfg, workdir, progress=lambda message: print(message, flush=True))


def _snr(rows: list[list[float]]) -> tuple[float, float]:
    """|mean| / std of a per-step quantity over windows of WINDOW steps: its median over gates and windows, and the
    largest of the gates' medians over windows (the gate with the clearest signal)."""
    per_gate: list[list[float]] = [[] for _ in rows[0]] if rows else []
    for start in range(0, len(rows) - WINDOW + 1, WINDOW):
        window = torch.tensor(rows[start : start + WINDOW])
        snr = window.mean(0).abs() / window.std(0)
        for gate, value in enumerate(snr.tolist()):
            if math.isfinite(value):
                per_gate[gate].append(value)
    values = [v for gate in per_gate for v in gate]
    if not values:
        return math.nan, math.nan
    return statistics.median(values), max(statistics.median(g) for g in per_gate if g)


def _straightness(steps: list[list[float]]) -> tuple[float, float]:
    """Median over gates of |net displacement| / path length, and the same for a random walk of as many steps."""
    s = torch.tensor(steps)
    ratio = (s.sum(0).abs() / s.abs().sum(0).clamp_min(1e-12)).median()
    walk = torch.randn(s.shape, generator=torch.Generator().manual_seed(0))
    return float(ratio), float((walk.sum(0).abs() / walk.abs().sum(0)).median())


def _agreement(rows: list[dict]) -> dict[str, tuple[float, int]]:
    """Per row kind: mean pairwise fraction of gates on which two seeds' architectures agree, and the pairs."""
    out = {}
    for kind in sorted({r["name"] for r in rows}):
        archs = [r["pruned_arch"] for r in rows if r["name"] == kind]
        pairs = [
            statistics.mean(a[g] == b[g] for g in a)
            for a, b in itertools.combinations(archs, 2)
            if a.keys() == b.keys()
        ]
        if pairs:
            out[kind] = (statistics.mean(pairs), len(pairs))
    return out


def _kendall(x: list[float], y: list[float]) -> tuple[float, float]:
    """Kendall's tau and its p-value (no association)."""
    from scipy.stats import kendalltau

    if len(x) < 3:
        return math.nan, math.nan
    result = kendalltau(x, y)
    return float(result.statistic), float(result.pvalue)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--compare-out", action="append", help="a finished nni-bsn compare folder (repeatable: same settings)"
    )
    parser.add_argument(
        "--planted",
        action="store_true",
        help="instead: the loss signal of the planted test's search, and on noise labels (3 seeds each)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="diagnose-bsn")
    parser.add_argument("--append", action="store_true")
    parser.add_argument(
        "--bsn",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a BSN option of the search (repeatable)",
    )
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.planted:
        return _planted(args.append)
    if not args.compare_out:
        parser.error("give --compare-out RUN (or --planted)")
    runs = [json.loads((Path(folder) / "compare.json").read_text()) for folder in args.compare_out]
    run = runs[0]
    rows = [r for one in runs for r in one["rows"] if r.get("status") == "ok" and r.get("pruned_arch")]
    store: dict = {}
    _record_steps(store)
    _score_archs_at_end([r["pruned_arch"] for r in rows], store)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    options = {
        k: json.loads(v) if v[:1].isdigit() or v in ("true", "false") else v
        for k, v in (o.split("=", 1) for o in args.bsn)
    }
    _search(run, args.seed, out / "search", options)
    for key in ("grad", "penalty_grad", "step"):  # none when the logits never step (warmup_epochs >= epochs)
        store.setdefault(key, [])
    loss_only = [[g - q for g, q in zip(a, b)] for a, b in zip(store["grad"], store["penalty_grad"])]
    straight, walk = _straightness(store["step"]) if store["step"] else (math.nan, math.nan)
    result = {
        "options": options,
        "steps": len(store["step"]),
        "snr_gradient": _snr(store["grad"]),
        "snr_loss_only": _snr(loss_only),
        "straightness": straight,
        "straightness_random_walk": walk,
        "mean_abs_step": statistics.mean([abs(v) for row in store["step"] for v in row] or [math.nan]),
        "agreement": _agreement(rows),
        "lock_in": _lock_in(store, loss_only) if loss_only else {},
        "commitment": _commitment(store, loss_only) if loss_only else {},
        "tau": {},
    }
    for kind in sorted({r["name"] for r in rows}) + ["all"]:
        idx = [i for i, r in enumerate(rows) if kind in ("all", r["name"])]
        tau, p = _kendall([store["inherited"][i] for i in idx], [rows[i]["test_acc"] for i in idx])
        result["tau"][kind] = (tau, p, len(idx))
    result["rows"] = [
        {
            "name": r["name"],
            "seed": r["seed"],
            "macs": r["macs"],
            "test_acc": r["test_acc"],
            "inherited": s,
        }
        for r, s in zip(rows, store["inherited"])
    ]
    (out / "diagnosis.json").write_text(json.dumps(result, indent=1))
    text = _render(result, run)
    print(text)
    if args.append:
        append(
            "BSN diagnosis: gradient signal, optimizer drift, seed agreement, ranking by shared weights", text
        )


def _planted(append_results: bool) -> None:
    """The yardstick: the loss gradient's SNR and summed t-statistic (:func:`_t_stat`) of the planted path and of
    the useless ones, in the planted test's search (tests/test_learns_from_loss.py: one path of four carries the
    labels), and the same search on labels of pure noise (no path carries anything)."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from test_learns_from_loss import search

    store: dict = {}
    _record_steps(store)
    lines = [
        "| labels | seed | steps | loss-gradient SNR, path 0 / the others (median) | summed push t, path 0 / the others "
        "(median) | straightness |",
        "|---|---|---|---|---|---|",
    ]
    for informative, seed in itertools.product((True, False), range(3)):
        store.clear()
        search(seed, informative=informative)
        loss = [[g - q for g, q in zip(a, b)] for a, b in zip(store["grad"], store["penalty_grad"])]
        push = -torch.tensor(loss)
        t = [_t_stat(push[:, g]) for g in range(push.shape[1])]
        snr = f"{_snr([row[:1] for row in loss])[0]:.3f} / {_snr([row[1:] for row in loss])[0]:.3f}"
        lines.append(
            f"| {'planted' if informative else 'noise'} | {seed} | {len(loss)} | {snr} | {t[0]:.2f} / "
            f"{statistics.median(t[1:]):.2f} | {_straightness(store['step'])[0]:.3f} |"
        )
    text = "\n".join(lines)
    print(text)
    if append_results:
        append("BSN diagnosis: the planted test's gradient signal (the yardstick)", text)


def _render(result: dict, run: dict) -> str:
    lines = [
        f"One BSN search ({result['steps']} architecture steps, budget {run['budget']['spec']} MACs) recorded:",
        f"- BSN options beyond the defaults: {result['options'] or 'none'}",
        f"- gradient SNR (|mean| / std over {WINDOW}-step windows; median over gates and windows / the clearest "
        f"gate's median): {result['snr_gradient'][0]:.3f} / {result['snr_gradient'][1]:.3f} in all, "
        f"{result['snr_loss_only'][0]:.3f} / {result['snr_loss_only'][1]:.3f} for the loss's REINFORCE part alone",
        f"- Adam's mean |step| of a logit: {result['mean_abs_step']:.4f}; straightness (|net| / path length, "
        f"median over gates) {result['straightness']:.3f}, a random walk of as many steps "
        f"{result['straightness_random_walk']:.3f}",
        "",
        f"- lock-in after the first epoch (the share of a part's push, by size, towards the side a gate is already "
        f"on; 0.5: blind to it): the penalty's {result['lock_in'].get('penalty', math.nan):.3f}, the loss's "
        f"{result['lock_in'].get('loss', math.nan):.3f}",
        _render_commitment(result["commitment"]),
        "",
        "| row | seed agreement of kept gates (pairs) | Kendall tau, inherited vs retrained test acc (p, n) |",
        "|---|---|---|",
    ]
    for kind, (tau, p, n) in result["tau"].items():
        agree = result["agreement"].get(kind)
        cell = f"{agree[0]:.3f} ({agree[1]})" if agree else "-"
        lines.append(f"| {kind} | {cell} | {tau:.3f} (p {p:.2f}, n {n}) |")
    return "\n".join(lines)


def _render_commitment(c: dict) -> str:
    if not c:
        return "- commitment: the logits never stepped"
    return (
        f"- commitment (keep-probability outside (0.1, 0.9) to the end): {c['committed']:.0%} of the gates commit, "
        f"the median gate at {c['commit_step']:.0%} of the search; the loss's summed push by then has a t-statistic "
        f"of {c['t_at_commit']:.2f} (median gate) and points to the committed side for {c['agree_at_commit']:.0%} "
        f"of the committed gates; over the whole search t {c['t_whole']:.2f}, the final side agreeing for "
        f"{c['agree_whole']:.0%} of the gates"
    )


if __name__ == "__main__":
    main()
