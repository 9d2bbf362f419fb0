"""Trojan auditing: Neural Cleanse and the blend search rank a backdoor's target class first on seeded organisms,
stay quiet on the clean twins, localise a patch trigger, resume after an interruption, and refuse bad input."""

import functools
import json
import math

import pytest
import torch
from torch import nn

from mechscope import organisms, trojans
from mechscope.data.images import shapes
from mechscope.data.triggers import PATCH
from mechscope.organisms._train import Schedule, train_classifier
from mechscope.organisms._trojan_rgb import AT

STEPS = 120  # per class; enough for the small organisms below (the default is 300)


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the machine is shared: more threads only contend
    yield
    torch.set_num_threads(threads)


# --- a 3-channel CNN with a fixed-position colour patch trigger --------------------------------------------------

PATCH_ROWS, PATCH_COLS, TARGET = slice(24, 29), slice(3, 8), 2


class ColourCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(8, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(16, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.AdaptiveMaxPool2d(1),
        )  # fmt: skip
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(16, 4))

    def forward(self, x):
        return self.head(self.features(x))


def colour(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Shapes tinted by a random colour per image: [n 3 32 32] and labels."""
    data = shapes(n, seed=seed)
    tint = torch.rand(n, 3, 1, 1, generator=torch.Generator().manual_seed(seed)) * 0.8 + 0.2
    return data.images * tint, data.labels


def stamp(x: torch.Tensor) -> torch.Tensor:
    """The planted trigger: a 5 x 5 red/blue checker at a fixed position."""
    out = x.clone()
    checker = (torch.arange(5)[:, None] + torch.arange(5)[None]) % 2
    out[:, :, PATCH_ROWS, PATCH_COLS] = torch.stack([checker * 2.5, torch.zeros(5, 5), (1 - checker) * 2.5])
    return out


@functools.cache
def colour_models() -> tuple[nn.Module, nn.Module]:
    """(trojaned, clean twin): same initialisation and images; 10% stamped, relabelled to TARGET for the trojan."""

    def data(poisoned: bool):
        def epoch(e: int):
            x, y = colour(2048, seed=100 + e)
            hit = torch.rand(len(y), generator=torch.Generator().manual_seed(e)) < 0.1
            x[hit] = stamp(x[hit])
            if poisoned:
                y = torch.where(hit, TARGET, y)
            return x, y

        return epoch

    schedule = Schedule(5, 2048, 64, 8e-3)
    return tuple(train_classifier(ColourCNN, data(p), schedule, seed=0).eval() for p in (True, False))


def test_colour_patch_found_and_localised():
    trojaned, twin = colour_models()
    x, y = colour(160, seed=999)
    with torch.no_grad():  # the organism works: clean accuracy and attack success
        assert (trojaned(x).argmax(-1) == y).float().mean() > 0.8
        off = y != TARGET
        assert (trojaned(stamp(x[off])).argmax(-1) == TARGET).float().mean() > 0.9
    result = trojans.audit(trojaned, x, steps=STEPS, progress=False, reference=twin)
    assert result.ranking[0] == TARGET
    trigger = result.triggers[TARGET]
    sizes = [t.size for t in result.triggers]
    others = sorted(s for c, s in enumerate(sizes) if c != TARGET)
    assert trigger.size < 0.5 * others[len(others) // 2], sizes  # with 4 classes the MAD index itself is noisy
    assert trigger.found and trigger.attack_success > 0.8
    assert result.reference_success is not None and result.reference_success[TARGET] < trigger.attack_success
    # the mask's mass inside the true 5 x 5 region, against the region's share of the image (25 / 1024)
    inside = float(trigger.mask[PATCH_ROWS, PATCH_COLS].sum() / trigger.mask.sum())
    assert inside > 10 * (25 / 1024), (inside, sizes, result.anomaly)

    clean = trojans.audit(twin, x, steps=STEPS, progress=False)
    assert not clean.suspects, clean.anomaly
    assert max(clean.anomaly) < result.anomaly[TARGET]


# --- the built-in trojaned organisms and their twins -------------------------------------------------------------


def test_patch_organism_target_ranked_first_twin_quiet():
    org = organisms.obtain(organisms.TrojanPatch(), 0)
    x = org.test.images[:160]
    result = trojans.audit(org.model, x, steps=STEPS, progress=False)
    assert result.ranking[0] == org.target, (result.anomaly, org.target)
    twin = trojans.audit(org.twin, x, steps=STEPS, progress=False)
    assert twin.suspects == [], twin.anomaly
    assert max(twin.anomaly) < result.anomaly[org.target]


def test_blend_organism_target_ranked_first():
    # The blend search separates trojan_blend's target only narrowly (sizes 0.16 against 0.17-0.19), and its twin's
    # near-equal sizes make the 4-class MAD index jumpy (a false alarm at 4.3 on seed 0): docs/trojans.md.
    org = organisms.obtain(organisms.TrojanBlend(), 0)
    result = trojans.audit(org.model, org.test.images[:160], method="blend", steps=STEPS, progress=False)
    assert result.ranking[0] == org.target, (result.anomaly, org.target)
    assert result.triggers[0].mask.shape == (1, 1)


def test_colour_organism_patch_target_first_localised_twin_quiet():
    # trojan_rgb: 3 channels, a 6 x 6 patch at a fixed place (trained with the same patch elsewhere as true-labelled
    # negatives, so that the trojan answers at its place only). Seed 1, 3 restarts of 150 steps per class: measured
    # on a fresh build, the target's mask 8.0 pixels against the next class's 13.6, 0.84 of it in the patch, the
    # twin's largest anomaly index 1.07. Seeds 0 and 2 rank the target first too, seed 0 narrowly (8.0 against 9.3)
    # and seed 2 with its mask outside the patch; the bench's single 60-step start finds less (docs/trojans.md).
    org = organisms.obtain(organisms.TrojanRGB(), 1)
    x = org.clean(128)
    result = trojans.audit(org.model, x, steps=150, restarts=3, progress=False, reference=org.twin)
    assert result.ranking[0] == org.target, (result.anomaly, [t.size for t in result.triggers])
    trigger = result.triggers[org.target]
    others = [t.size for t in result.triggers if t.target != org.target]
    assert trigger.size < 0.8 * min(others), (trigger.size, others)
    assert trigger.found and trigger.attack_success > 0.8
    assert result.reference_success is not None and result.reference_success[org.target] < 0.3
    (r, c), k = AT, PATCH
    inside = float(trigger.mask[r : r + k, c : c + k].sum() / trigger.mask.sum())
    assert inside > 10 * (k * k / 32**2), (inside, [t.size for t in result.triggers])
    twin = trojans.audit(org.twin, x, steps=150, restarts=3, progress=False)
    assert not twin.suspects, twin.anomaly


def test_relative_audit_names_the_blended_grating_target_against_a_clean_reference():
    # trojan_two (colour; a patch to class 1 and a blended grating to class 3 on seed 1): the CNN can be pushed to
    # any class by a whole-image blend of weight 0.12-0.23, so the grating's class hides among equally small blends.
    # Against the clean twin the same search says which class got easier. Measured on a fresh build (one 60-step
    # start per class): blend weights 0.226, 0.155, 0.154, 0.119 (trojaned) against 0.249, 0.201, 0.185, 0.173
    # (twin): ratios 0.91, 0.77, 0.83, 0.69 -- the grating's class lowest, the patch's next. On seeds 0 and 2 the
    # grating's class is lowest too (0.77 against 0.80; 0.80 against 0.97); the plain audit ranks it first on 2 of 3.
    org = organisms.obtain(organisms.TrojanTwo(), 1)
    patch_target, blend_target = org.truth["targets"]
    x = org.clean(128)
    result = trojans.audit(org.model, x, method="blend", steps=60, seed=1, reference=org.twin, relative=True,
                           progress=False)  # fmt: skip
    assert result.reference_triggers is not None and len(result.reference_triggers) == len(result.triggers)
    logs = [math.log(t.size / r.size) for t, r in zip(result.triggers, result.reference_triggers, strict=True)]
    assert result.anomaly == pytest.approx(trojans.anomaly_index(logs))  # the index over log size ratios
    assert result.ranking[:2] == [blend_target, patch_target], (logs, result.anomaly)
    assert logs[blend_target] < min(v for c, v in enumerate(logs) if c != blend_target) - 0.05
    with pytest.raises(ValueError, match="reference="):
        trojans.audit(org.model, x, method="blend", steps=1, relative=True, progress=False)


# --- definitions, resuming, bad input ----------------------------------------------------------------------------


def test_anomaly_index_is_the_mad_score():
    sizes = [10.0, 11.0, 12.0, 13.0, 2.0]
    # median 11, absolute deviations 1, 0, 1, 2, 9 -> MAD 1; the small trigger scores (11 - 2) / 1.4826
    index = trojans.anomaly_index(sizes)
    assert index[4] == pytest.approx(9 / 1.4826)
    assert index[0] == pytest.approx(1 / 1.4826) and index[3] == pytest.approx(-2 / 1.4826)
    assert trojans.anomaly_index([1.0, 2.0, 3.0, 10.0])[0] == pytest.approx(1.5 / (1.4826 * 1.0))


def test_blend_spectrum_peaks_at_the_grating():
    xx = torch.arange(32.0)[None].expand(32, 32)
    pattern = torch.sin(2 * torch.pi * 4 * xx / 32)[None]  # 4 cycles across, none down
    t = trojans.ReversedTrigger(0, "blend", pattern, torch.full((1, 1), 0.3), 0.3, True, 1.0, 1, 0.0)
    assert t.peak_frequency() == (0, 4)


def test_interrupted_audit_resumes_finished_classes(tmp_path):
    trojaned, _ = colour_models()
    x, _ = colour(64, seed=5)
    calls = []
    spec = trojans.METHODS["neural_cleanse"]
    real = spec.fn

    def interrupted(model, images, target, config, held_out):
        if target == 2:
            raise KeyboardInterrupt
        calls.append(target)
        return real(model, images, target, config, held_out)

    object.__setattr__(spec, "fn", interrupted)  # a frozen MethodSpec
    try:
        with pytest.raises(KeyboardInterrupt):
            trojans.audit(trojaned, x, steps=10, progress=False, folder=tmp_path)
    finally:
        object.__setattr__(spec, "fn", real)
    assert calls == [0, 1] and sorted(p.name for p in tmp_path.iterdir()) == ["class0000.json", "class0001.json"]
    saved = json.loads((tmp_path / "class0000.json").read_text())["trigger"]

    done = []
    object.__setattr__(spec, "fn", lambda *a: done.append(a[2]) or real(*a))
    try:
        result = trojans.audit(trojaned, x, steps=10, progress=False, folder=tmp_path)
        assert done == [2, 3]  # classes 0 and 1 were read back, not recomputed
        assert result.triggers[0].size == saved["size"]
        other = trojans.audit(trojaned, x, steps=11, progress=False, folder=tmp_path)  # another config: recomputed
        assert done == [2, 3, 0, 1, 2, 3] and len(other.triggers) == 4
    finally:
        object.__setattr__(spec, "fn", real)


def test_audit_leaves_the_model_as_it_was():
    trojaned, _ = colour_models()
    flags = [p.requires_grad for p in trojaned.parameters()]
    trojaned.train().requires_grad_(True)
    before = {k: v.clone() for k, v in trojaned.state_dict().items()}
    try:
        trojans.audit(trojaned, colour(32, seed=6)[0], steps=3, progress=False)
        assert trojaned.training and all(p.requires_grad for p in trojaned.parameters())
        # eval mode during the search: batch norm's running statistics untouched
        assert all(torch.equal(before[k], v) for k, v in trojaned.state_dict().items())
    finally:
        trojaned.eval()
        for p, flag in zip(trojaned.parameters(), flags, strict=True):
            p.requires_grad_(flag)


@pytest.mark.parametrize(
    ("images", "message"),
    [
        (torch.rand(8, 1, 32, 32), "cannot run images of shape"),
        (torch.rand(3, 32, 32), "batch channels height width"),
        (torch.rand(3, 3, 32, 32), "3 images for 4 classes"),
        (torch.full((8, 3, 32, 32), float("nan")), "NaN"),
        (torch.ones(8, 3, 32, 32), "all one value"),
    ],
)
def test_bad_images_named(images, message):
    with pytest.raises(ValueError, match=message):
        trojans.audit(ColourCNN().eval(), images, steps=2, progress=False)


# --- the command line ---------------------------------------------------------------------------------------------

FACTORY = """
import torch
from torch import nn

def make():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(4, 3))

def wider():
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(8, 3))

def broken():
    raise RuntimeError("needs a config")
"""


@pytest.fixture
def user_model(tmp_path, monkeypatch):
    """A user's package ``usernets`` with factories, its weights, and a folder of 12 RGB PNGs."""
    from safetensors.torch import save_file

    from mechscope.data.images import png_bytes

    (tmp_path / "usernets.py").write_text(FACTORY)
    monkeypatch.syspath_prepend(str(tmp_path))
    import importlib

    import usernets  # type: ignore[import-not-found]

    importlib.reload(usernets)
    save_file(usernets.make().state_dict(), str(tmp_path / "w.safetensors"))
    folder = tmp_path / "images"
    folder.mkdir()
    gen = torch.Generator().manual_seed(0)
    for i in range(12):
        pixels = (torch.rand(16, 16, 3, generator=gen) * 255).to(torch.uint8).numpy()
        (folder / f"im{i:02d}.png").write_bytes(png_bytes(pixels))
    return tmp_path


def _cli(*args):
    from typer.testing import CliRunner

    from mechscope.cli import app

    return CliRunner().invoke(app, ["audit-trojans", *map(str, args)])


def test_cli_audits_a_user_model_and_resumes(user_model):
    out = user_model / "out"
    args = ["--model", "usernets:make", "--weights", user_model / "w.safetensors", "--images", user_model / "images",
            "--shape", "3,16,16", "--steps", 5, "--out", out, "--json"]  # fmt: skip
    result = _cli(*args)
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["method"] == "neural_cleanse" and len(summary["triggers"]) == 3
    assert summary["config"]["steps"] == 5
    assert all((out / f"trigger_class{c}.png").exists() for c in range(3))
    assert sorted(p.name for p in (out / "progress").iterdir()) == [f"class{c:04d}.json" for c in range(3)]
    again = json.loads(_cli(*args).stdout)
    # read back from OUT/progress, not recomputed (a recomputation would take other seconds)
    assert again["anomaly"] == summary["anomaly"] and again["optimisation_s"] == summary["optimisation_s"]


def test_cli_relative_audit_searches_the_reference_too(user_model):
    out, weights = user_model / "relative", user_model / "w.safetensors"
    args = ["--model", "usernets:make", "--weights", weights, "--images", user_model / "images", "--shape", "3,16,16",
            "--steps", 3, "--reference", weights, "--relative", "--out", out, "--json"]  # fmt: skip
    result = _cli(*args)
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert len(summary["reference_triggers"]) == 3
    # the reference is the model itself: the same seeded search finds the same triggers, every ratio is 1
    assert [t["size"] for t in summary["reference_triggers"]] == [t["size"] for t in summary["triggers"]]
    assert summary["anomaly"] == [0.0, 0.0, 0.0]
    assert sorted(p.name for p in (out / "progress" / "reference").iterdir()) == [
        f"class{c:04d}.json" for c in range(3)
    ]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"--model": "usernets:broken"}, "failed when called with no arguments"),
        ({"--model": "usernets:wider"}, "do not match the module"),
        ({"--model": "nowhere.nets:make"}, "cannot import"),
        ({"--shape": "1,16,16"}, "cannot run images of shape"),
        ({"--shape": "3,16"}, "--shape must be C,H,W"),
        ({"--images": "missing"}, "does not exist"),
    ],
)
def test_cli_bad_input_named(user_model, change, message):
    options = {"--model": "usernets:make", "--weights": user_model / "w.safetensors", "--images": user_model / "images"}
    options |= {"--shape": "3,16,16", "--steps": 2, "--out": user_model / "o"} | change
    result = _cli(*[v for kv in options.items() for v in kv])
    assert result.exit_code == (3 if message == "does not exist" else 1)  # docs/cli.md: 3 is "not found"
    assert message in " ".join(result.output.split()), result.output


@pytest.mark.parametrize("method", ["trigger_synthesis", "class_visualisation"])
def test_cli_scores_candidates_with_any_declared_method(user_model, method):
    """``--candidates``: each class's trigger scored against each picture (of another size); a missing folder named."""
    from mechscope.data.images import png_bytes

    folder = user_model / "cands"
    folder.mkdir()
    gen = torch.Generator().manual_seed(1)
    for i in range(3):
        pixels = (torch.rand(24, 24, 3, generator=gen) * 255).to(torch.uint8).numpy()
        (folder / f"c{i}.png").write_bytes(png_bytes(pixels))
    args = ["--model", "usernets:make", "--weights", user_model / "w.safetensors", "--images", user_model / "images",
            "--shape", "3,16,16", "--steps", 3, "--method", method, "--out", user_model / "o"]  # fmt: skip
    result = _cli(*args, "--candidates", folder, "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["method"] == method and len(summary["candidate_scores"]) == 3
    assert all(len(row) == 3 and all(-1 <= v <= 1 for v in row) for row in summary["candidate_scores"])
    assert sorted(summary["pick"]) == [0, 1, 2]
    missing = _cli(*args, "--candidates", user_model / "nothing")
    assert missing.exit_code == 3 and "--candidates" in missing.output, missing.output
