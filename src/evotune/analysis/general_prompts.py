"""A fixed set of general prompts for off-task KL drift.

Off-task drift asks how much fine-tuning on one task changed the model's behaviour everywhere
else; these prompts cover chat, knowledge, writing, code, maths and instructions so that drift
confined to one skill still shows. They are written here (no download) and never change, so
numbers from different reports are comparable.
"""

from __future__ import annotations

from typing import Any

GENERAL_PROMPTS: tuple[str, ...] = (
    "Hi! How are you today?",
    "What is the boiling point of water at sea level?",
    "Explain photosynthesis in two sentences.",
    "Write a haiku about autumn leaves.",
    "Give me three tips for sleeping better.",
    "What is the difference between weather and climate?",
    "Translate 'good morning' into French and Spanish.",
    "Write a Python function that reverses a string.",
    "What is 17 times 23?",
    "Summarise the plot of Romeo and Juliet in one sentence.",
    "Why is the sky blue?",
    "Suggest a name for a small bakery.",
    "List the planets of the solar system in order.",
    "How do I make a cup of tea?",
    "What does a CPU do in a computer?",
    "Write a short, polite email declining a meeting invitation.",
    "Who wrote 'Pride and Prejudice'?",
    "Explain what a prime number is to a ten-year-old.",
    "Give an example of a metaphor.",
    "What are the main causes of inflation?",
    "Describe a cat in three words.",
    "How many days are there in a leap year?",
    "What is the capital of Australia?",
    "Write a SQL query that counts the rows of a table named users.",
    "Tell me a fun fact about octopuses.",
    "What should I pack for a weekend hiking trip?",
    "Is it healthy to drink coffee every day?",
    "Continue the story: The door creaked open and",
    "What is the square root of 144?",
    "Explain the rules of tic-tac-toe briefly.",
)


def render_general(prompt: str, tokenizer: Any) -> str:
    """Model input for a general prompt: the chat template when the tokenizer has one."""
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True
        )
    return prompt + "\n"
