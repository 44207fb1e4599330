"""Response classes on hand-written strings (nlhf.envs.features; rules in its docstring)."""

import numpy as np
import pytest

from nlhf.data.schema import Message
from nlhf.envs.features import (
    CLASSES,
    DIRECT,
    OPENING_MAX_WORDS,
    PERSONAL,
    STRUCTURED,
    UNFOCUSED,
    class_distribution,
    classify,
    content_words,
    first_sentence,
    response_class,
    response_features,
)

CAPITAL = "What is the capital of France?"
LEGS = "How many legs does a spider have?"
MORNING = "What is the best way to start the day?"


@pytest.mark.parametrize(
    ("prompt", "response", "expected"),
    [
        # structured: a line break, or a list / heading marker opening the first line
        (
            "Give me three tips for sleeping better.",
            "Here are three tips:\n\n1. Keep a schedule.",
            STRUCTURED,
        ),
        ("Give me three tips for sleeping better.", "1. Keep a schedule", STRUCTURED),
        ("Give me three tips for sleeping better.", "- Keep a schedule", STRUCTURED),
        ("Write a short poem about the sea.", "Waves on the shore,\nsalt in the air", STRUCTURED),
        (
            "Write a short poem about the sea.",
            "  The sea is calm.  \n",
            DIRECT,
        ),  # outer whitespace is stripped
        # personal: a short first sentence with a person word, "!" or "?"
        (CAPITAL, "I'm glad you asked. Paris is the capital.", PERSONAL),
        (CAPITAL, "Great question! Paris.", PERSONAL),
        (CAPITAL, "Ever been to Paris? It is the capital.", PERSONAL),
        (CAPITAL, "Let\u2019s see. Paris.", PERSONAL),  # typographic apostrophe
        # direct: a short impersonal first sentence naming the topic of the prompt
        (CAPITAL, "The capital of France is Paris.", DIRECT),
        (LEGS, "A spider has eight legs.", DIRECT),
        (LEGS, "Spiders are arachnids. They have eight legs.", DIRECT),  # plural "s" dropped
        # unfocused: a long first sentence, or an impersonal opening off the topic, or nothing
        (MORNING, "The morning can be a transformative time.", UNFOCUSED),
        (
            CAPITAL,
            "Paris is lovely. The capital of France is Paris.",
            UNFOCUSED,
        ),  # only the first sentence counts
        (CAPITAL, "", UNFOCUSED),
        (CAPITAL, "   ", UNFOCUSED),
    ],
)
def test_response_class_on_hand_written_strings(prompt, response, expected):
    assert CLASSES[response_class(prompt, response)] == CLASSES[expected]


def test_long_opening_is_unfocused_even_when_personal_or_on_topic():
    """21 words (> OPENING_MAX_WORDS = 20) in the first sentence -> unfocused; 20 -> not."""
    assert OPENING_MAX_WORDS == 20
    twenty = "The capital of France is Paris " + "and " * 13 + "more."  # 6 + 13 + 1 = 20 words
    assert len(twenty.split()) == 20
    assert response_class(CAPITAL, twenty) == DIRECT
    assert response_class(CAPITAL, "The capital of France is Paris " + "and " * 14 + "more.") == UNFOCUSED
    assert response_class(CAPITAL, "I think you " + "really " * 19 + "know.") == UNFOCUSED
    # a response cut off before its first sentence ends: the whole text is the opening
    assert response_class(CAPITAL, "The capital of France is " + "a city " * 10) == UNFOCUSED


def test_rules_are_tried_in_order():
    """A line break wins over a long, personal, on-topic opening."""
    text = "I love that you ask about the capital of France " + "so " * 30 + "much!\nParis."
    f = response_features(CAPITAL, text)
    assert (f.line_break, f.personal_opening, f.topic_opening, f.opening_words > 20) == (
        True,
        True,
        True,
        True,
    )
    assert f.label == STRUCTURED
    assert response_class(CAPITAL, "You know, the capital of France is Paris.") == PERSONAL


def test_first_sentence_and_content_words():
    assert first_sentence("It is 3.5 km away. Then more.") == "It is 3.5 km away."
    assert first_sentence("No end here") == "No end here"
    assert first_sentence("Line one\nline two. x") == "Line one"
    assert first_sentence("Wow! Yes.") == "Wow!"
    assert content_words("How many legs does a spider have?") == {"leg", "spider"}
    assert content_words("What is the capital of France?") == {"capital", "france"}


def test_prompt_as_conversation_uses_last_user_turn():
    convo = (
        Message("system", "You answer about geography."),
        Message("user", "Tell me about Spain."),
        Message("assistant", "Spain is in Europe."),
        Message("user", CAPITAL),
    )
    assert response_class(convo, "The capital of France is Paris.") == DIRECT
    assert response_class(convo, "Spain is in Europe.") == UNFOCUSED


def test_classify_and_distribution():
    labels = classify([CAPITAL] * 4, ["1. Paris", "I know! Paris.", "France's capital is Paris.", "Hmm."])
    assert labels.tolist() == [STRUCTURED, PERSONAL, DIRECT, UNFOCUSED]
    assert labels.dtype == np.int64
    np.testing.assert_allclose(class_distribution([0, 0, 2, 3]), [0.5, 0.0, 0.25, 0.25])
    with pytest.raises(ValueError, match="2 prompts but 1 responses"):
        classify([CAPITAL, CAPITAL], ["x"])
    with pytest.raises(ValueError, match="labels must be in 0..3"):
        class_distribution([0, 4])
    with pytest.raises(TypeError, match="response must be a string"):
        response_class(CAPITAL, None)
