"""Named training settings: data, not code paths. Options given on the command line win."""
from drawkit.errors import check_choice

# Mnih et al. 2014's set as DeepMind's generator makes it: new images for every epoch (its stream never repeats)
CLUTTERED_MNIST = ["canvas=100", "clutter=8", "fragment=8", "crops=anywhere", "fresh=true"]
#: how the cluttered classifiers are trained (docs/results.md): the rate annealed to 0 along a cosine over a
#: fixed number of epochs, with warm restarts (--lr-restarts) where a longer cosine took over; the recipes of
#: Table 1's figures: about 3 hours (8 glimpses, both cores) to 6 (4 glimpses, one core) on a 2-core CPU with --compile
CLUTTERED_TRAINING = {"batch_size": 64, "lr": 1e-3, "lr_schedule": "cosine"}

#: name -> (what it is, the options it sets); keys are `drawkit train` option names with underscores, one of
#: drawkit.cli.PRESETTABLE (each reaches a config field; any other key is refused when the preset is used)
PRESETS = {
    "paper-mnist": (
        "DRAW with attention on binarized MNIST (paper: <= 80.97 nats)",
        {"dataset": "binarized-mnist", "encoder": "lstm", "attention": "filterbank", "glimpses": 64,
         "hidden": 256, "z_dim": 100, "read_size": 2, "write_size": 5, "likelihood": "bernoulli",
         "batch_size": 100, "lr": 1e-3},
    ),
    "paper-mnist-noattention": (
        "DRAW without attention on binarized MNIST (paper: 87.40 nats)",
        {"dataset": "binarized-mnist", "encoder": "lstm", "attention": "none", "glimpses": 64,
         "hidden": 256, "z_dim": 100, "likelihood": "bernoulli", "batch_size": 100, "lr": 1e-3},
    ),
    "paper-cluttered": (
        "DRAW's classifier (section 4.1) on 100x100 cluttered MNIST, 8 glimpses of 12x12 (paper: 3.36% error)",
        {"task": "classify", "dataset": "cluttered-mnist", "dataset_opt": list(CLUTTERED_MNIST),
         "encoder": "lstm", "attention": "filterbank", "glimpses": 8, "hidden": 256, "read_size": 12,
         **CLUTTERED_TRAINING, "lr": 5e-4, "epochs": 400, "lr_restarts": "170,250"},  # 5e-4: better than 1e-3 here
    ),
    "paper-cluttered-4": (
        "DRAW's classifier (section 4.1) on 100x100 cluttered MNIST, 4 glimpses of 12x12 (paper: 4.18% error)",
        {"task": "classify", "dataset": "cluttered-mnist", "dataset_opt": list(CLUTTERED_MNIST),
         "encoder": "lstm", "attention": "filterbank", "glimpses": 4, "hidden": 256, "read_size": 12,
         **CLUTTERED_TRAINING, "epochs": 560, "lr_restarts": "180,340", "clip": 1.0},
    ),
}


def preset_options(name: str) -> dict:
    check_choice("preset", name, PRESETS)
    return dict(PRESETS[name][1])


def preset_setting(name, key: str):
    """The value preset ``name`` gives option ``key``; None when it sets none, or when no preset has that name
    (a run saved under a preset since renamed must still resume)."""
    return PRESETS.get(name, (None, {}))[1].get(key)
