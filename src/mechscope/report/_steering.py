"""Steering sweeps, rendered: behaviour change against damage, one line per steered site across the scales.

matplotlib is imported inside the function that draws, so importing this module costs nothing.
"""

from __future__ import annotations

from pathlib import Path

from ..lenses._steering import SteeringSweep


def steering_plot(result: SteeringSweep, path: str | Path, *, title: str | None = None) -> Path:
    """Save a PNG of each site's behaviour change (y) against its damage (x, KL on unrelated text) over the scales.

    The dashed line is the clean prompts' logit difference minus the corrupt ones': the change that would turn every
    corrupt prompt into its clean twin.
    """
    from matplotlib import colormaps
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 4.2), dpi=120, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    colours = [colormaps["viridis"](i / max(1, len(result.sites) - 1)) for i in range(len(result.sites))]
    for site, change, damage, colour in zip(result.sites, result.change, result.damage, colours, strict=True):
        ax.plot(damage.numpy(), change.numpy(), marker="o", markersize=3, color=colour, label=site)
    ax.axhline(result.clean - result.corrupt, color="grey", linestyle="--", linewidth=1)
    ax.axhline(0, color="black", linewidth=0.5)
    ax.set_xscale("symlog", linthresh=1e-3)
    scales = ", ".join(f"{s:g}" for s in result.scales)
    ax.set(xlabel="damage: KL(plain || steered) on unrelated text (nats)",
           ylabel="behaviour change (logit difference)")  # fmt: skip
    ax.legend(fontsize=6, ncols=2, title=f"scales {scales}", title_fontsize=6)
    fig.suptitle(title or f"steering {result.task}: change vs damage", fontsize=10)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path
