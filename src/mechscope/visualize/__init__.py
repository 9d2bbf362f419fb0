"""Feature visualisation: what makes a unit fire, shown as optimised images, real exemplars and class prototypes.

- :func:`visualize`: activation maximisation (Erhan et al. 2009) of a channel, neuron, direction or dictionary
  latent, in a decorrelated Fourier parametrisation with transformation robustness (Olah et al. 2017), optionally
  several diverse images at once (Gram-matrix diversity; Nguyen et al. 2016's multifaceted visualisation).
- :func:`exemplars`: the dataset images and receptive-field patches on which the unit is highest.
- :func:`prototype`: Prototype Generation (Tagade & Rumbelow 2023): a class prototype whose activation path stays
  close to real images of the class, scored against plain activation maximisation.

Example::

    from mechscope import visualize as vz
    from mechscope.organisms import vision_organism

    org = vision_organism("shapes-cnn")
    rng = vz.InputRange.of(org.test.images)
    vis = vz.visualize(org.model, "relu3:5", (1, 32, 32), input_range=rng, config=vz.VisualizeConfig(n=3, diversity=1))
    top = vz.exemplars(org.model, "relu3:5", org.test.images, k=8)
    vz.METHODS["prototype"]  # the declared methods and their configs (what ``mechscope visualize`` offers)

Pictures (PNG grids, pages) are drawn by ``mechscope.report``: ``report.save_png(path, report.grid(vis.images))``.
"""

from ._exemplars import Exemplars, exemplars, receptive_fields
from ._folder import read_folder
from ._objectives import Channel, Direction, Latent, Objective, SparseDictionary, Sum, as_objective, parse_unit
from ._optimize import Visualization, VisualizeConfig, gram_cosine, visualize
from ._param import FourierImage, InputRange, PixelImage, colour_matrix, make_param, spectrum_slope
from ._prototype import (
    ClassPaths,
    PrototypeConfig,
    PrototypeResult,
    class_paths,
    path_penalty,
    path_similarity,
    path_sites,
    prototype,
)
from ._registry import METHODS
from ._transforms import Transforms

__all__ = [
    "METHODS",
    "Channel",
    "ClassPaths",
    "Direction",
    "Exemplars",
    "FourierImage",
    "InputRange",
    "Latent",
    "Objective",
    "PixelImage",
    "PrototypeConfig",
    "PrototypeResult",
    "SparseDictionary",
    "Sum",
    "Transforms",
    "Visualization",
    "VisualizeConfig",
    "as_objective",
    "class_paths",
    "colour_matrix",
    "exemplars",
    "gram_cosine",
    "make_param",
    "parse_unit",
    "path_penalty",
    "path_similarity",
    "path_sites",
    "prototype",
    "read_folder",
    "receptive_fields",
    "spectrum_slope",
    "visualize",
]
