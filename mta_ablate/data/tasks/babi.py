"""bAbI-style stories QA1-QA3 generated in-project (no installable package ships bAbI).

Each generator returns (facts, question, answer) with a one-word answer:
  qa1  single supporting fact   "Mary went to the kitchen."            "Where is Mary?"               kitchen
  qa2  two supporting facts     "John took the milk." + his moves      "Where is the milk?"           hallway
  qa3  three supporting facts   the object's last two locations        "Where was the milk before the hallway?"
"""

from __future__ import annotations

import numpy as np

from mta_ablate.config.tasks import BABI_FACTS

ACTORS = ("Mary", "John", "Sandra", "Daniel")
PLACES = ("bathroom", "bedroom", "garden", "hallway", "kitchen", "office")
OBJECTS = ("apple", "football", "milk")
MOVE = ("moved to", "went to", "journeyed to", "travelled to", "went back to")
GET = ("got", "grabbed", "picked up", "took")
DROP = ("dropped", "discarded", "put down", "left")


def _pick(rng: np.random.Generator, options):
    return options[int(rng.integers(len(options)))]


def qa1(rng: np.random.Generator, n_facts: int) -> tuple[list[str], str, str]:
    """Where is X? -> the last place X moved to."""
    loc: dict[str, str] = {}
    facts = []
    for _ in range(n_facts):
        actor, place = _pick(rng, ACTORS), _pick(rng, PLACES)
        loc[actor] = place
        facts.append(f"{actor} {_pick(rng, MOVE)} the {place}.")
    actor = _pick(rng, sorted(loc))
    return facts, f"Where is {actor}?", loc[actor]


def _objects_story(rng: np.random.Generator, n_facts: int):
    """Actors move, pick up and drop objects; returns facts and each object's location history."""
    loc: dict[str, str] = {}
    holder: dict[str, str] = {}
    history: dict[str, list[str]] = {o: [] for o in OBJECTS}
    facts = []

    def visit(obj: str, place: str) -> None:
        if not history[obj] or history[obj][-1] != place:
            history[obj].append(place)

    for _ in range(n_facts):
        actor = _pick(rng, ACTORS)
        free = [o for o in OBJECTS if o not in holder]
        mine = [o for o, h in holder.items() if h == actor]
        r = rng.random()
        if actor in loc and free and r < 0.3:
            obj = _pick(rng, free)
            holder[obj] = actor
            visit(obj, loc[actor])
            facts.append(f"{actor} {_pick(rng, GET)} the {obj}.")
        elif mine and r < 0.5:
            obj = _pick(rng, mine)
            del holder[obj]
            facts.append(f"{actor} {_pick(rng, DROP)} the {obj}.")
        else:
            place = _pick(rng, PLACES)
            loc[actor] = place
            for obj in (o for o, h in holder.items() if h == actor):
                visit(obj, place)
            facts.append(f"{actor} {_pick(rng, MOVE)} the {place}.")
    return facts, history


def qa2(rng: np.random.Generator, n_facts: int) -> tuple[list[str], str, str]:
    """Where is the OBJ? -> where its holder is, or where it was dropped."""
    for _ in range(1000):
        facts, history = _objects_story(rng, n_facts)
        asked = [o for o in OBJECTS if history[o]]
        if asked:
            obj = _pick(rng, asked)
            return facts, f"Where is the {obj}?", history[obj][-1]
    raise RuntimeError("qa2: no object was ever picked up")  # pragma: no cover


def qa3(rng: np.random.Generator, n_facts: int) -> tuple[list[str], str, str]:
    """Where was the OBJ before the PLACE? -> the object's location before its current one."""
    for _ in range(1000):
        facts, history = _objects_story(rng, n_facts)
        asked = [o for o in OBJECTS if len(history[o]) >= 2]
        if asked:
            obj = _pick(rng, asked)
            return facts, f"Where was the {obj} before the {history[obj][-1]}?", history[obj][-2]
    raise RuntimeError(f"qa3: no object moved twice in {n_facts} facts; use more facts")  # pragma: no cover


GENERATORS = {1: qa1, 2: qa2, 3: qa3}
DEFAULT_FACTS = BABI_FACTS
