"""Stop criteria: EOS and stop token ids, length, and stop sequences matched on text."""

from __future__ import annotations

from djl_python.engine.request import RequestStatus, SamplingParams
from djl_python.engine.stopping import StopChecker


def feed_all(checker: StopChecker, deltas: list[str]) -> list[str]:
    return [checker.feed_text(d) for d in deltas]


def test_eos_stop_token_ids_and_length() -> None:
    checker = StopChecker(SamplingParams(stop_token_ids=(9,)), max_tokens=3, eos_token_ids=(2,))
    assert checker.check_token(5, 1) is None
    assert checker.check_token(2, 1) == RequestStatus.FINISHED_EOS
    assert checker.check_token(9, 2) == RequestStatus.FINISHED_EOS
    assert checker.check_token(5, 3) == RequestStatus.FINISHED_LENGTH
    assert checker.check_token(2, 3) == RequestStatus.FINISHED_EOS  # EOS wins over length


def test_ignore_eos_keeps_stop_token_ids() -> None:
    checker = StopChecker(SamplingParams(ignore_eos=True, stop_token_ids=(9,)), max_tokens=10, eos_token_ids=(2,))
    assert checker.check_token(2, 1) is None
    assert checker.check_token(9, 2) == RequestStatus.FINISHED_EOS


def test_stop_sequence_split_across_deltas_is_found_and_cut() -> None:
    checker = StopChecker(SamplingParams(stop=("END",)), 100, ())
    shown = feed_all(checker, ["Hello E", "N", "D and more"])
    assert "".join(shown) == "Hello "
    assert checker.matched == "END"
    assert checker.feed_text("later") == "" and checker.flush() == ""


def test_held_back_text_is_released_when_the_prefix_does_not_match() -> None:
    checker = StopChecker(SamplingParams(stop=("\n\n",)), 100, ())
    assert checker.feed_text("a\n") == "a"  # "\n" could start the stop sequence
    assert checker.feed_text("b") == "\nb"
    assert checker.feed_text("c\n") == "c"
    assert checker.flush() == "\n"  # ended for another reason: nothing lost
    assert checker.matched is None


def test_a_stream_never_shows_a_prefix_of_a_later_match() -> None:
    stops = ("<|end|>", "###")
    text = "answer: 42 <|en"
    deltas = list(text) + list("d|> trailing")
    checker = StopChecker(SamplingParams(stop=stops), 100, ())
    shown = ""
    for d in deltas:
        shown += checker.feed_text(d)
        assert "<" not in shown  # "<" was always a possible start of "<|end|>"
    assert shown == "answer: 42 " and checker.matched == "<|end|>"


def test_stop_inside_one_delta_and_earliest_of_several_wins() -> None:
    checker = StopChecker(SamplingParams(stop=("cd", "b")), 100, ())
    assert checker.feed_text("abcd") == "a"
    assert checker.matched == "b"


def test_without_stop_sequences_text_passes_straight_through() -> None:
    checker = StopChecker(SamplingParams(), 100, ())
    assert feed_all(checker, ["x", "\n", ""]) == ["x", "\n", ""]


def test_a_stop_sequence_whose_prefix_repeats_inside_it_is_matched_across_deltas() -> None:
    """For "aab" after "xaa", the held suffix must be the longest stop prefix ("aa"), not a
    shorter one ("a"): holding "a" would release "xa" and never see "aab"."""
    checker = StopChecker(SamplingParams(stop=("aab",)), 100, ())
    assert checker.feed_text("xaa") == "x"
    assert checker.feed_text("b") == ""
    assert checker.matched == "aab"
    other = StopChecker(SamplingParams(stop=("abab",)), 100, ())
    assert other.feed_text("zaba") == "z" and other.feed_text("b!") == "" and other.matched == "abab"


def test_min_tokens_boundaries_follow_vllm() -> None:
    """vLLM: stop ids are masked while fewer than ``min_tokens`` tokens exist (so the token that
    makes ``min_tokens`` cannot be one), and stop checks apply once the output holds
    ``min_tokens`` tokens (the token that makes it included)."""
    checker = StopChecker(SamplingParams(min_tokens=3, stop_token_ids=(9,)), max_tokens=10, eos_token_ids=(2,))
    assert checker.suppressed_ids(2) == frozenset({2, 9})
    assert checker.suppressed_ids(3) == frozenset()
    assert checker.check_token(2, 2) is None
    assert checker.check_token(9, 3) == RequestStatus.FINISHED_EOS


def test_min_tokens_holds_stop_sequences_before_any_token_is_counted() -> None:
    checker = StopChecker(SamplingParams(min_tokens=1, stop=("ab",)), 100, ())
    assert checker.feed_text("xab") == "xab" and checker.matched is None  # no token counted yet
    checker.check_token(5, 1)
    assert checker.feed_text("ab") == "" and checker.matched == "ab"
