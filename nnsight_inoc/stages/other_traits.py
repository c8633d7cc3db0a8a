"""The other registered traits' directions v'(l): part of C1's structured null (issue 22, item 4a).

A random direction on the sphere is a low bar for "specific to v": ~1000 examples in 1536 dimensions
put almost any real shift beyond it. The other traits the project studies (``data/traits/``) give
directions the model actually represents; if the inoculation prompt moves the gradient as much along
another trait's direction as along v, the shift is not about this trait. Each v' is built the way
``extract`` builds v: unit mean activation under the trait's promote prompt minus under its suppress
prompt, over the direction split, at the position the study compares gradients with
(``align.direction_position``). At ``final_prompt`` (the default) that is a cheap read of prompts alone
(the answer after the prompt cannot change the prompt's residuals: attention is causal); at the two
answer positions the model's own answers are generated first, as extract does.

Written to ``extract/other_directions.pt`` beside ``directions.pt``, reused while its key (model,
splits, position, the traits' prompts) is unchanged.
"""

from __future__ import annotations

from typing import Any

import torch

from nnsight_inoc.core import artifacts as A
from nnsight_inoc.core.progress import log
from nnsight_inoc.data.traits import Trait, get_trait, registered_traits
from nnsight_inoc.measures.directions import POSITIONS, mean_difference
from nnsight_inoc.probes.residuals import read_final, read_positions
from nnsight_inoc.study import Study, answers


def trait_direction(study: Study, trait: Trait, position: str) -> torch.Tensor:
    """(L, d) unit v of ``trait`` at ``position`` over the study's direction split (see the module docstring)."""
    users = [p.text for p in study.splits.direction]
    tok, bs = study.loaded.tokenizer, study.cfg.extract.batch_size
    acts = []
    for system in (trait.promote, trait.suppress):
        if position == "final_prompt":
            h = read_final(study.tlm, tok, system, users, bs)[:, :, None]  # (n, L, 1, d)
        else:
            ans = answers(study, system, users, study.cfg.extract.max_new_tokens, f"other trait {trait.name}")
            h = read_positions(study.tlm, tok, system, users, ans, bs)[:, :, POSITIONS.index(position)][:, :, None]
        acts.append(h)
    return mean_difference(acts[0], acts[1])[:, 0]


def other_trait_directions(study: Study) -> dict[str, Any]:
    """{key, position, traits: {name: {promote, suppress}}, v: {name: (L, d)}} for every registered trait but
    the study's own; read from ``extract/other_directions.pt`` when its key matches, else computed and written."""
    position = study.cfg.align.direction_position
    others = [get_trait(n) for n in registered_traits() if n != study.trait.name]
    key = {"model_sha256": study.loaded.sha256, "model_name": study.loaded.name, "splits_sha256": study.splits.sha256(),
           "position": position, "traits": {t.name: {"promote": t.promote, "suppress": t.suppress} for t in others}}
    path = study.layout.other_directions
    if path.is_file():
        blob = A.load_torch(path)
        if blob.get("key") == key:
            return blob
    blob = {"key": key, "position": position, "traits": key["traits"],
            "v": {t.name: trait_direction(study, t, position) for t in others}}
    A.save_torch(path, blob)
    log(f"other traits' directions ({', '.join(blob['v'])}) at {position} written to {path}")
    return blob
