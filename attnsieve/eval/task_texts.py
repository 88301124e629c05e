"""The texts of `attnsieve.eval.tasks`: haystack filler, needles and one prompt builder per task.

A builder maps a number of filler units to a prompt with its answers; `attnsieve.eval.tasks` fits
that number to a length in tokens. The essay filler comes from a fixed word list through a tiny
grammar, the noise filler is the passkey paper's; needle keys are drawn from words the filler never
uses. Templates follow RULER (Hsieh et al., arXiv 2404.06654) and the passkey task of Mohtashami &
Jaggi (arXiv 2305.16300); `attnsieve.eval.tasks` says where they differ.
"""

from __future__ import annotations

import itertools
import math
import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Draft:
    prompt: str
    answers: tuple[str, ...]
    target: str


# A builder maps a number of filler units k to a prompt; more units never mean fewer tokens.
Builder = Callable[[int], Draft]

# Words for the essay-like haystack and for needle keys (kept apart so keys never occur in filler).
# fmt: off
_DET = ["the", "a", "every", "one", "that", "this", "our", "their"]
_ADJ = ["quiet", "old", "bright", "small", "early", "simple", "careful", "strange", "useful",
        "heavy", "narrow", "distant", "common", "patient", "rapid", "gentle", "honest", "modern",
        "ancient", "plain", "curious", "steady", "silent", "crowded"]
_NOUN = ["river", "garden", "market", "teacher", "village", "engine", "letter", "window", "harbor",
         "scholar", "painter", "road", "kitchen", "library", "machine", "farmer", "museum",
         "bridge", "tower", "forest", "student", "lamp", "city", "clock"]
_VERB = ["noticed", "described", "carried", "followed", "built", "opened", "measured", "visited",
         "changed", "repaired", "studied", "painted", "moved", "watched", "found", "crossed",
         "explained", "collected", "remembered"]
_PREP = ["near", "behind", "beyond", "under", "across", "beside", "inside", "around"]
_ADV = ["slowly", "often", "quietly", "always", "rarely", "carefully", "suddenly", "again",
        "nearly", "gladly"]
_KEY_ADJ = ["amber", "brisk", "coral", "dusty", "elated", "fuzzy", "glossy", "hollow", "icy",
            "jolly", "knotty", "lunar", "misty", "nimble", "olive", "polar", "quirky", "rusty",
            "sandy", "tidal", "umber", "vivid", "woolly", "zesty"]
_KEY_NOUN = ["anchor", "badger", "cactus", "dagger", "ember", "falcon", "gadget", "hammock",
             "igloo", "jackal", "kettle", "lantern", "magnet", "nectar", "otter", "pepper",
             "quiver", "raven", "saddle", "tulip", "urchin", "violin", "walrus", "yacht"]
_NOISE = [  # the passkey paper's (and RULER's) repeated noise
    "The grass is green.", "The sky is blue.", "The sun is yellow.", "Here we go.",
    "There and back again.",
]
# fmt: on


class Stream:
    """Lazily extended, seeded list of filler units; ``take(k)`` is a prefix, stable in k.
    ``make(rng, i)`` makes unit i."""

    def __init__(self, make: Callable[[random.Random, int], str], seed: str) -> None:
        self._make, self._rng, self._items = make, random.Random(seed), []

    def take(self, k: int) -> list[str]:
        while len(self._items) < k:
            self._items.append(self._make(self._rng, len(self._items)))
        return self._items[:k]


def _essay_sentence(rng: random.Random, _: int) -> str:
    c = rng.choice
    det, adj, noun, verb = c(_DET), c(_ADJ), c(_NOUN), c(_VERB)
    text = c(
        [
            f"{det} {adj} {noun} {verb} {c(_DET)} {c(_NOUN)} {c(_PREP)} the {c(_NOUN)}",
            f"{det} {noun} {c(_ADV)} {verb} {c(_DET)} {adj} {c(_NOUN)}",
            f"{c(_PREP)} the {adj} {noun}, {det} {c(_NOUN)} {verb} {c(_DET)} {c(_NOUN)}",
        ]
    )
    return text[0].upper() + text[1:] + "."


def filler(kind: str, seed: str) -> Stream:
    if kind == "essay":
        return Stream(_essay_sentence, seed)
    return Stream(lambda _, i: _NOISE[i % len(_NOISE)], seed)


def _insert(units: list[str], needles: Sequence[tuple[float, str]]) -> str:
    """Insert each (depth, text) needle at the sentence boundary nearest ``depth``; keep order."""
    parts = list(units)
    # Insert from the back so earlier indices stay valid; reversed() of a stable ascending sort
    # keeps needles that land on the same boundary in their given order.
    for depth, text in reversed(sorted(needles, key=lambda x: x[0])):
        parts.insert(round(depth * len(units)), text)
    return " ".join(parts)


def _number(rng: random.Random, digits: int) -> str:
    return str(rng.randrange(10 ** (digits - 1), 10**digits))


def _distinct(make: Callable[[], str], n: int) -> list[str]:
    out: list[str] = []
    while len(out) < n:
        item = make()
        if item not in out:
            out.append(item)
    return out


def _join(items: Sequence[str]) -> str:
    return ", ".join(items)


def niah(num_keys: int, num_values: int, num_queries: int) -> Callable:
    """RULER NIAH: ``num_keys`` needles (the first ``num_queries`` are asked for), each key holding
    ``num_values`` 7-digit numbers. Needles other than the first queried one go to random depths."""

    def factory(rng: random.Random, depth: float, stream: Stream) -> Builder:
        # no two keys share a word, as RULER's (from wonderwords' thousands) almost never do: a
        # distractor "amber-otter" beside the asked "amber-raven" would be a harder task; one key
        # draws what rng.choice drew before
        adjectives, nouns = rng.sample(_KEY_ADJ, num_keys), rng.sample(_KEY_NOUN, num_keys)
        keys = [f"{a}-{n}" for a, n in zip(adjectives, nouns, strict=True)]
        depths = [[rng.random() for _ in range(num_values)] for _ in keys]
        depths[0][0] = depth
        values = [[_number(rng, 7) for _ in range(num_values)] for _ in keys]
        needles = [
            (d, f"One of the special magic numbers for {key} is: {value}.")
            for key, ds, vs in zip(keys, depths, values, strict=True)
            for d, value in zip(ds, vs, strict=True)
        ]
        queried = keys[:num_queries]
        # answers in query order, a key's values in text order: a target a model can learn
        answers = tuple(
            v
            for ds, vs in zip(depths, values[:num_queries], strict=False)
            for _, v in sorted(zip(ds, vs, strict=True), key=lambda x: x[0])
        )
        plural = len(answers) > 1
        noun, verb = ("numbers", "are") if plural else ("number", "is")
        query = _join(queried[:-1]) + " and " + queried[-1] if len(queried) > 1 else queried[0]
        head = (
            "Some special magic numbers are hidden within the following text. Make sure to "
            "memorize it. I will quiz you about the numbers afterwards.\n"
        )
        tail = (
            f"\nWhat {verb} {'all ' if plural else ''}the special magic {noun} for {query} "
            f"mentioned in the provided text?\nAnswer: The special magic {noun} for {query} "
            f"mentioned in the provided text {verb}"
        )
        target = " " + _join(answers) + "."
        return lambda k: Draft(head + _insert(stream.take(k), needles) + tail, answers, target)

    return factory


def passkey(rng: random.Random, depth: float, stream: Stream) -> Builder:
    key = _number(rng, 5)
    head = (
        "There is an important info hidden inside a lot of irrelevant text. Find it and memorize "
        "it. I will quiz you about the important information there.\n"
    )
    needle = f"The pass key is {key}. Remember it. {key} is the pass key."
    tail = "\nWhat is the pass key? The pass key is"
    return lambda k: Draft(
        head + _insert(stream.take(k), [(depth, needle)]) + tail, (key,), f" {key}."
    )


def variable_tracking(rng: random.Random, depth: float, stream: Stream) -> Builder:
    """RULER vt: one chain of 4 hops, ``VAR X1 = 12345`` then ``VAR X2 = VAR X1`` ..."""
    upper = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
    names = _distinct(lambda: "".join(rng.choice(upper) for _ in range(5)), 5)
    value = _number(rng, 5)
    depths = [depth, *sorted(depth + (1 - depth) * rng.random() for _ in names[1:])]
    statements = [f"VAR {names[0]} = {value}."]
    statements += [f"VAR {b} = VAR {a}." for a, b in itertools.pairwise(names)]
    head = "Memorize and track the chain(s) of variable assignment hidden in the following text.\n"
    tail = (
        f"\nQuestion: Find all variables that are assigned the value {value} in the text above."
        f"\nAnswer: According to the chain(s) of variable assignment in the text above, "
        f"{len(names)} variables are assigned the value {value}, they are:"
    )
    needles = list(zip(depths, statements, strict=True))
    return lambda k: Draft(
        head + _insert(stream.take(k), needles) + tail, tuple(names), " " + _join(names) + "."
    )


def _new_pseudo_words(taken: Sequence[str] = ()) -> Callable[[random.Random, int], str]:
    """A maker of pronounceable words (2-3 syllables) that never repeats a word it made, nor
    makes one of ``taken``."""
    seen = set(taken)

    def make(rng: random.Random, _: int) -> str:
        while True:
            size = rng.randint(2, 3)
            word = "".join(rng.choice("bdfgklmnprstvz") + rng.choice("aeiou") for _ in range(size))
            if word not in seen:
                seen.add(word)
                return word

    return make


_CWE_HEAD = (
    "Below is a numbered list of words. In these words, some appear more often than others. "
    "Memorize the ones that appear most often.\n"
)
_CWE_TAIL = (
    "\nQuestion: What are the 10 most common words in the above list?\nAnswer: The top 10 words "
    "that appear most often in the list are:"
)


def common_words(rng: random.Random, length: int) -> Builder:
    """RULER cwe: 10 words seen 30 times among words seen 3 times (6 vs 2 below 4K tokens)."""
    freq_common, freq_rare = (30, 3) if length >= 4096 else (6, 2)
    # a word of the template ("more", "some") would be counted once more, and found in an answer
    # that merely echoes the question
    template = re.findall(r"\w+", (_CWE_HEAD + _CWE_TAIL).lower())
    words = Stream(_new_pseudo_words(template), f"{rng.random()}")
    seed = rng.random()

    def build(k: int) -> Draft:
        vocab = words.take(10 + k)
        common, rare = vocab[:10], vocab[10:]
        items = common * freq_common + rare * freq_rare
        random.Random(f"{seed}|{k}").shuffle(items)
        listing = " ".join(f"{i + 1}. {w}" for i, w in enumerate(items))
        common = sorted(common, key=items.index)  # in order of first appearance
        prompt = _CWE_HEAD + listing + _CWE_TAIL
        return Draft(prompt, tuple(common), " " + _join(common) + ".")

    return build


_FWE_MIN_WORDS = 64  # below this, floor() ties the 4th and 5th ranked counts


def frequent_words(rng: random.Random, length: int) -> Builder:
    """RULER fwe: words drawn with Zipf(alpha=2) counts over 2000 coded words; the top-ranked
    word is the noise '....' and the answers are ranks 2-4."""
    alpha, letters = 2.0, "abcdefghijklmnopqrstuvwxyz"
    vocab = _distinct(lambda: "".join(rng.choice(letters) for _ in range(6)), 2000)
    vocab[0] = "...."
    zeta = math.pi**2 / 6  # zeta(2)
    seed = rng.random()

    def build(k: int) -> Draft:
        n = _FWE_MIN_WORDS + k
        items = [w for r, w in enumerate(vocab, 1) for _ in range(int(n * r**-alpha / zeta))]
        random.Random(f"{seed}|{k}").shuffle(items)
        prompt = (
            "Read the following coded text and track the frequency of each coded word. Find the "
            f"three most frequently appeared coded words. {' '.join(items)}\nQuestion: Do not "
            "provide any explanation. Please ignore the dots '....'. What are the three most "
            "frequently appeared words in the above coded text?\nAnswer: According to the coded "
            "text above, the three most frequently appeared words are:"
        )
        return Draft(prompt, tuple(vocab[1:4]), " " + _join(vocab[1:4]) + ".")

    return build
