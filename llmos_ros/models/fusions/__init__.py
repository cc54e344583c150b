"""
Fusions: one module per fusion (posterior, objective, latent layout), registered by name.

`get(name)`, `names()`, `fuse(name, mus, logvars, mask)`. A new fusion is a module with a
`Fusion` subclass and one `register` line below.
"""
from llmos_ros.models.fusions.base import Fusion, fuse, get, names, register
from llmos_ros.models.fusions.mmvae_plus import MMVAEPlus
from llmos_ros.models.fusions.moe import MoE
from llmos_ros.models.fusions.mopoe import MoPoE
from llmos_ros.models.fusions.poe import PoE

register(PoE())
register(MoE())
register(MoPoE())
register(MMVAEPlus())

__all__ = ['Fusion', 'fuse', 'get', 'names', 'register']
