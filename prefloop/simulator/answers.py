"""Template answers for `--mode template` (load tests): no model, the same mix of polite/neutral and
short/long answers whatever the version, so only the pipeline is exercised."""

from __future__ import annotations

import random

from prefloop.simulator.questions import Question

_BODIES = {
    "factual_qa": "The answer is well documented: {q} is covered in most encyclopedias.",
    "comparison": "Both options have strengths; for most people the simpler one is the better start.",
    "creative": "Here is a small piece: light on the hills, a quiet song, and a long way home.",
    "problem_solving": "Start with the power and the cables, then restart it and check the settings.",
    "explanation": "It works step by step: energy goes in, something useful comes out, and the rest is heat.",
}
_PADDING = (" There are many more details one could add about history, edge cases, alternatives and the"
            " reasons behind each step, which experts still discuss at length in books and long articles.")


def template_answer(question: Question, rng: random.Random) -> str:
    body = _BODIES[question.category].format(q=question.text.rstrip("?.!").lower())
    if rng.random() < 0.35:
        body = "Sure! " + body
    if rng.random() < 0.4:
        body += _PADDING * rng.randint(1, 3)
    return body
