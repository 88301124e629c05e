"""Synthetic long-context tasks: determinism, answers in the prompt, scoring, token lengths."""

import re
from collections import Counter

import pytest

from attnsieve.eval import tasks
from attnsieve.eval.probe.tokenizer import ByteTokenizer
from attnsieve.eval.tasks import (
    TASKS,
    LengthTooShortError,
    answer_budget,
    check_length,
    encode,
    make_samples,
)

BYTES = ByteTokenizer()
NEEDLE_TASKS = [name for name, spec in TASKS.items() if spec.uses_depth]


@pytest.fixture(scope="module")
def bpe():
    """A small byte-level BPE tokenizer trained here, wrapped as a transformers tokenizer."""
    tokenizers = pytest.importorskip("tokenizers")
    transformers = pytest.importorskip("transformers")
    corpus = [make_samples(task, BYTES, 2048, 1, seed=99)[0].prompt for task in TASKS]
    model = tokenizers.Tokenizer(tokenizers.models.BPE(unk_token="<unk>"))
    model.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False)
    model.decoder = tokenizers.decoders.ByteLevel()
    trainer = tokenizers.trainers.BpeTrainer(
        vocab_size=600,
        special_tokens=["<unk>", "<s>", "</s>"],
        initial_alphabet=tokenizers.pre_tokenizers.ByteLevel.alphabet(),
    )
    model.train_from_iterator(corpus, trainer)
    return transformers.PreTrainedTokenizerFast(
        tokenizer_object=model, bos_token="<s>", eos_token="</s>", unk_token="<unk>"
    )


@pytest.mark.parametrize("task", list(TASKS))
def test_same_seed_same_samples_other_seed_different(task):
    a = make_samples(task, BYTES, 1500, 3, seed=1)
    b = make_samples(task, BYTES, 1500, 3, seed=1)
    c = make_samples(task, BYTES, 1500, 3, seed=2)
    assert a == b
    assert all(x.prompt != y.prompt and x.answers != y.answers for x, y in zip(a, c, strict=True))
    assert len({s.answers for s in a}) == 3  # samples of one call differ too


@pytest.mark.parametrize("task", list(TASKS))
@pytest.mark.parametrize("length", [1024, 4096])
def test_length_within_tolerance_for_both_tokenizers(task, length, bpe):
    for tokenizer in (BYTES, bpe):
        for s in make_samples(task, tokenizer, length, 2, seed=0):
            assert s.num_tokens == len(encode(tokenizer, s.prompt))
            # the answer's room is kept; below it by less than one filler unit (a sentence, or one
            # word with its repeats)
            room = length - answer_budget(tokenizer, s.target)
            assert room - 100 <= s.num_tokens <= room, (task, type(tokenizer), s.num_tokens)
            assert s.length == length


def _fitted_builders(monkeypatch) -> list:
    """The (builder, k) of every prompt make_samples fits from now on; k: its filler units."""
    fitted, fit = [], tasks._fit

    def spy(build, *args):
        units = {}

        def traced(k):
            draft = build(k)
            units[draft.prompt] = k
            return draft

        draft, num_tokens = fit(traced, *args)
        fitted.append((build, units[draft.prompt]))
        return draft, num_tokens

    monkeypatch.setattr(tasks, "_fit", spy)
    return fitted


def _size(tokenizer, draft, answer_room: bool) -> int:
    room = answer_budget(tokenizer, draft.target) if answer_room else 0
    return len(encode(tokenizer, draft.prompt)) + room


# cwe's target (its words in order of first appearance) changes with the filler units
@pytest.mark.parametrize("task", ["niah_multivalue", "variable_tracking", "common_words"])
@pytest.mark.parametrize("tokenizer_name", ["bytes", "bpe"])
@pytest.mark.parametrize("answer_room", [True, False])
def test_prompt_is_the_largest_that_leaves_the_answer_room(
    task, tokenizer_name, answer_room, request, monkeypatch
):
    tokenizer = BYTES if tokenizer_name == "bytes" else request.getfixturevalue("bpe")
    length = 2048
    fitted = _fitted_builders(monkeypatch)
    samples = make_samples(task, tokenizer, length, 3, seed=5, answer_room=answer_room)
    assert len(fitted) == len(samples)
    for s, (build, k) in zip(samples, fitted, strict=True):
        assert build(k).prompt == s.prompt and s.num_tokens == len(encode(tokenizer, s.prompt))
        fits, next_unit = _size(tokenizer, build(k), answer_room), build(k + 1)
        assert fits <= length < _size(tokenizer, next_unit, answer_room), (task, k)
        assert s.length == length


def test_a_length_that_holds_the_prompt_but_not_its_answer_is_too_short():
    # passkey's shortest prompt has one size in bytes whatever the seed: a 5-digit key
    with pytest.raises(LengthTooShortError) as short:
        make_samples("passkey", BYTES, 1, 1, seed=0, answer_room=False)
    shortest = int(re.search(r"has (\d+) tokens", str(short.value)).group(1))
    budget = answer_budget(BYTES, " 12345.")
    length = shortest + budget - 1
    (s,) = make_samples("passkey", BYTES, length, 1, seed=0, answer_room=False)
    assert s.num_tokens == shortest and answer_budget(BYTES, s.target) == budget
    with pytest.raises(LengthTooShortError) as short:
        make_samples("passkey", BYTES, length, 1, seed=0)
    assert str(short.value) == (
        f"length={length} is too short for task 'passkey': its shortest prompt has {shortest} "
        f"tokens, and {budget} more are kept for its answer"
    )


@pytest.mark.parametrize("task", sorted(TASKS))
def test_check_length_refuses_what_make_samples_refuses(task):
    """check_length counts each sample's shortest prompt only: at every length it raises exactly
    where make_samples does, with its message."""
    outcomes = set()
    for length in range(150, 1000, 31):
        try:
            make_samples(task, BYTES, length, 6, seed=3)
        except LengthTooShortError as e:
            with pytest.raises(LengthTooShortError) as checked:
                check_length(task, BYTES, length, 6, seed=3)
            assert str(checked.value) == str(e)
            outcomes.add("short")
        else:
            check_length(task, BYTES, length, 6, seed=3)
            outcomes.add("fits")
    assert outcomes == {"short", "fits"}


@pytest.mark.parametrize("task", NEEDLE_TASKS)
def test_needle_answers_are_in_the_prompt_and_right_answer_scores_one(task):
    for s in make_samples(task, BYTES, 2048, 3, seed=0):
        body = s.prompt[: s.prompt.rindex("\n")]  # the question line repeats keys, not values
        assert all(answer in body for answer in s.answers)
        assert s.score(s.target) == 1.0
        assert s.score(s.target.upper()) == 1.0  # case-insensitive, as RULER
        assert s.score("I do not know.") == 0.0


def test_niah_values_follow_their_key():
    s = make_samples("niah_multikey", BYTES, 2048, 1, seed=3)[0]
    key = re.search(r"What is the special magic number for (\S+) mentioned", s.prompt).group(1)
    needles = dict(re.findall(r"special magic numbers for (\S+) is: (\d{7})\.", s.prompt))
    assert len(needles) == 4  # one queried key and three distractors
    assert s.answers == (needles[key],)
    distractor = next(v for k, v in needles.items() if k != key)
    assert s.score(f" {distractor}.") == 0.0


@pytest.mark.parametrize("task", ["niah_multikey", "niah_multiquery"])
def test_no_two_keys_share_a_word(task):
    """RULER's keys (wonderwords' thousands of words) almost never share one: drawn with
    replacement from 24 adjectives and 24 nouns, a fifth of the multikey samples had a
    distractor sharing the asked key's adjective or noun."""
    for seed in range(10):
        for s in make_samples(task, BYTES, 1024, 4, seed):
            keys = re.findall(r"special magic numbers for (\w+)-(\w+) is", s.prompt)
            assert len(keys) == 4
            for words in zip(*keys, strict=True):
                assert len(set(words)) == 4, (seed, s.index, keys)


def test_common_words_repeats_follow_the_length_asked_for():
    """A tokenizer that adds a BOS made prefill_sample fit its prompt to 4095 tokens, under cwe's
    4096 threshold: its words were repeated 6 / 2 times instead of RULER's 30 / 3."""
    s = tasks.prefill_sample("common_words", BYTES, 4096, 0)
    assert s.num_tokens + len(BYTES.encode("")) <= 4096
    counts = Counter(re.findall(r"\d+\. (\w+)", s.prompt.split("\n")[1]))
    assert sorted(set(counts.values())) == [3, 30]


def test_multi_answer_scores_are_fractions_and_targets_follow_the_text():
    s = make_samples("niah_multivalue", BYTES, 2048, 1, seed=0)[0]
    assert len(s.answers) == 4
    positions = [s.prompt.index(a) for a in s.answers]
    assert positions == sorted(positions)  # a learnable order for the training target
    assert s.score(" ".join(s.answers[:2])) == 0.5
    s = make_samples("niah_multiquery", BYTES, 2048, 1, seed=0)[0]
    assert s.score(s.answers[0]) == 0.25


def test_a_longer_word_or_number_holding_an_answer_scores_zero():
    s = make_samples("common_words", BYTES, 16384, 2, seed=0)[1]
    listing = s.prompt.split("\n")[1]
    rare = set(re.findall(r"\d+\. (\w+)", listing)) - set(s.answers)
    holders = [w for a in s.answers for w in rare if a in w]  # e.g. "vana" in "vanavu"
    assert holders
    assert s.score(" " + ", ".join(holders) + ".") == 0.0
    assert s.score(s.target) == 1.0
    s = make_samples("niah_single", BYTES, 1024, 1, seed=0)[0]
    assert s.score(f" {s.answers[0]}9.") == 0.0  # an 8-digit number
    assert s.score(f"({s.answers[0]})") == 1.0


def test_depth_places_the_needle():
    samples = make_samples("niah_single", BYTES, 4096, 3, seed=0)
    assert [s.depth for s in samples] == [0.0, 0.5, 1.0]  # default: an even sweep
    for s in make_samples("niah_single", BYTES, 4096, 4, seed=0, depths=[0.1, 0.9]):
        position = s.prompt.index(s.answers[0]) / len(s.prompt)
        assert abs(position - s.depth) < 0.1
    for s in make_samples("common_words", BYTES, 1024, 2, seed=0, depths=[0.3]):
        assert s.depth is None


def test_variable_tracking_chain_is_in_order():
    s = make_samples("variable_tracking", BYTES, 2048, 1, seed=0, depths=[0.5])[0]
    names = s.answers
    first = s.prompt.index(f"VAR {names[0]} = ")
    hops = [s.prompt.index(f"VAR {b} = VAR {a}.") for a, b in zip(names, names[1:], strict=False)]
    assert first < hops[0] and hops == sorted(hops)
    value = re.search(rf"VAR {names[0]} = (\d+)\.", s.prompt).group(1)
    assert f"assigned the value {value}" in s.prompt


def test_common_words_answers_are_the_most_common():
    for length in (1024, 4096):
        s = make_samples("common_words", BYTES, length, 1, seed=0)[0]
        listing = s.prompt.split("\n")[1]
        counts = Counter(re.findall(r"\d+\. (\w+)", listing))
        top = {w for w, _ in counts.most_common(10)}
        assert top == set(s.answers)
        first_seen = dict.fromkeys(re.findall(r"\d+\. (\w+)", listing))
        assert list(s.answers) == [w for w in first_seen if w in top]  # target: in text order
        assert min(counts[w] for w in s.answers) > max(
            c for w, c in counts.items() if w not in s.answers
        )


def test_common_words_are_not_words_of_the_template():
    """Seed 44's second sample drew "more" as a common word: the template's "some appear more
    often" counted it once more, and "more" in an answer scored as if it were listed."""
    for s in make_samples("common_words", BYTES, 2000, 3, seed=44):
        listing = s.prompt.split("\n")[1]
        template = set(re.findall(r"\w+", s.prompt.replace(listing, "").lower()))
        assert not template & set(re.findall(r"\d+\. (\w+)", listing)), s.index


def test_frequent_words_answers_are_ranks_two_to_four():
    for length in (1024, 8192):
        s = make_samples("frequent_words", BYTES, length, 1, seed=0)[0]
        text = s.prompt.split("coded words. ")[1].split("\nQuestion")[0]
        counts = Counter(w for w in text.split(" ") if w != "....")
        ranked = [c for _, c in counts.most_common()]
        assert [w for w, _ in counts.most_common(3)] == list(s.answers)
        assert ranked[2] > ranked[3]  # no tie between the 3rd answer and the next word


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="task must be one of"):
        make_samples("nope", BYTES, 1024, 1, seed=0)
    with pytest.raises(ValueError, match="task must be one of"):  # was "unhashable type"
        make_samples(["passkey"], BYTES, 1024, 1, seed=0)
    with pytest.raises(TypeError, match="answer_room must be a bool"):  # was read as True
        make_samples("passkey", BYTES, 1024, 1, seed=0, answer_room="no")
    with pytest.raises(ValueError, match="length must be a positive int"):
        make_samples("passkey", BYTES, 0, 1, seed=0)
    with pytest.raises(ValueError, match="n must be a positive int"):
        make_samples("passkey", BYTES, 1024, 0, seed=0)
    with pytest.raises(ValueError, match="depths"):
        make_samples("passkey", BYTES, 1024, 1, seed=0, depths=[1.5])
    with pytest.raises(ValueError, match="depths"):  # was a TypeError about '<='
        make_samples("passkey", BYTES, 1024, 1, seed=0, depths=[0.5, "0.5"])
    for seed in (1.0, True, "1"):  # hashed as text: other samples than seed 1, silently
        with pytest.raises(TypeError, match="seed must be an int"):
            make_samples("passkey", BYTES, 1024, 1, seed=seed)
    with pytest.raises(LengthTooShortError, match="too short"):
        make_samples("niah_single", BYTES, 100, 1, seed=0)
    with pytest.raises(TypeError, match="encode"):
        make_samples("passkey", object(), 1024, 1, seed=0)
