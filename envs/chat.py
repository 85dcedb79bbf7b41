"""The chat around the policy's replies: the text the built-in environments show, and the exact
tokens of a multi-turn conversation.

Turn 1 asks for a program. Each later turn appends feedback on the previous program and asks for
a revision. The policy's sampled tokens are kept verbatim (never re-tokenised); only the
environment's text (task, feedback, chat markup) is tokenised here.
"""
from __future__ import annotations

import re
from typing import Sequence

from envs.execution import TestResult, Verdict
from envs.tasks import Task

ANSWER_FORMAT = "Write your solution as one Python code block (```python ... ```)."

# SCoRe's turn-2 instruction for code: a generic note, no execution feedback.
INSTRUCTION_FEEDBACK = (
    "There might be an error in the code above because of lack of understanding of the question. "
    "Please correct the error, if any, and rewrite the solution. Only output the final correct Python program!"
)

_FENCE = re.compile(r"```[ \t]*(?:python3?|py)?[ \t]*\n(.*?)(?:```|\Z)", re.DOTALL | re.IGNORECASE)


def first_user_message(task: Task) -> str:
    return f"{task.prompt.strip()}\n\n{ANSWER_FORMAT}"


def extract_code(reply: str) -> str | None:
    """The last fenced code block of a reply (an unclosed final fence counts: the reply may have
    run out of tokens). None when there is no block, or only an empty one."""
    blocks = [b.strip() for b in _FENCE.findall(reply)]
    blocks = [b for b in blocks if b]
    return blocks[-1] if blocks else None


def execution_feedback(public: Sequence[TestResult] | None, task: Task, max_chars: int, max_failures: int) -> str:
    """RLEF's feedback after a turn: the failing public tests (input, expected, got or the error);
    `public` is None when the reply held no program."""
    if public is None:
        return f"Your reply did not contain a Python code block. {ANSWER_FORMAT}"
    failures = [(test, result) for test, result in zip(task.public_tests, public) if result.verdict is not Verdict.PASS]
    if not failures:
        text = "Your code passed the public tests. Check it for edge cases and output the final program."
        return text
    lines = ["Your code failed the following tests:"]
    for test, result in failures[:max_failures]:
        lines.append(_describe_failure(test, result))
    if len(failures) > max_failures:
        lines.append(f"... and {len(failures) - max_failures} more.")
    lines.append(f"Fix the program. {ANSWER_FORMAT}")
    return _truncate("\n".join(lines), max_chars)


def _describe_failure(test, result: TestResult) -> str:
    if result.verdict is Verdict.FAIL and test.kind == "call":
        return f"- Input: {test.input}\n  Expected: {test.expected}\n  Got: {result.got}"
    if result.verdict is Verdict.FAIL:
        return f"- Test: {test.describe()}\n  Failed: {result.message or 'wrong answer'}" + (f"\n  Got: {result.got}" if result.got else "")
    reason = {
        Verdict.TIMEOUT: "took too long",
        Verdict.MEMORY: "ran out of memory",
        Verdict.OUTPUT_LIMIT: "printed too much output",
        Verdict.SANDBOX: "could not be run (sandbox failure, not your program's fault)",
    }.get(result.verdict, f"error: {result.message}")
    return f"- Test: {test.describe()}\n  Result: {reason}"


def _truncate(text: str, max_chars: int) -> str:
    return text if len(text) <= max_chars else text[: max_chars - 15].rstrip() + "\n...(truncated)"


class ChatFormat:
    """Token ids of the environment's parts of a chat, from the tokenizer's own chat template.

    Later-turn prompts are built by appending ids to the previous context, so the policy's reply
    tokens stay exactly as sampled. The template is probed once to learn what it writes after an
    assistant reply ("<|im_end|>\\n" for ChatML) and before the next assistant reply.
    """

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.eos_token_id = tokenizer.eos_token_id
        probe_user, probe_reply = "\x00U\x00", "\x00R\x00"
        base = [{"role": "user", "content": probe_user}, {"role": "assistant", "content": probe_reply}]
        closed = tokenizer.apply_chat_template(base, tokenize=False)
        follow = tokenizer.apply_chat_template(base + [{"role": "user", "content": "\x00F\x00"}], tokenize=False, add_generation_prompt=True)
        if not follow.startswith(closed) or probe_reply not in closed:
            raise ValueError("the tokenizer's chat template does not render conversations as an append-only prefix")
        self._after_reply = closed[closed.index(probe_reply) + len(probe_reply):]   # e.g. "<|im_end|>\n"
        self._feedback_template = follow[len(closed):]                             # e.g. "<|im_start|>user\n\x00F\x00<|im_end|>\n<|im_start|>assistant\n"
        self._eos_text = tokenizer.decode([self.eos_token_id]) if self.eos_token_id is not None else ""

    def first_prompt_ids(self, message: str) -> list[int]:
        """The chat-templated first user message, ready for the assistant's reply."""
        messages = [{"role": "user", "content": message}]
        return list(self.tokenizer.apply_chat_template(messages, tokenize=True, add_generation_prompt=True, return_dict=False))

    def feedback_ids(self, feedback: str, reply_ids: list[int]) -> list[int]:
        """Ids that close the policy's reply (unless it closed itself with EOS) and open the next turn."""
        closing = self._after_reply
        if reply_ids and reply_ids[-1] == self.eos_token_id and closing.startswith(self._eos_text):
            closing = closing[len(self._eos_text):]
        text = closing + self._feedback_template.replace("\x00F\x00", feedback)
        return self.tokenizer.encode(text, add_special_tokens=False)
