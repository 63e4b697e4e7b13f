"""InvokeAI utilities: `POST /api/v1/utilities/dynamicprompts` (expanding `{a|b}` prompt syntax)."""

from __future__ import annotations

import logging
from typing import Annotated

from dynamicprompts.generators import CombinatorialPromptGenerator, RandomPromptGenerator
from fastapi import APIRouter, Body
from pydantic import BaseModel

logger = logging.getLogger(__name__)

router = APIRouter(prefix="/api/v1/utilities", tags=["utilities"])


class DynamicPromptsResponse(BaseModel):
    prompts: list[str]
    error: str | None = None


# Declared as separate Body parameters, as InvokeAI does, so the body is `{prompt, max_prompts, ...}` and
# the OpenAPI schema matches (`Body_parse_dynamicprompts`).
@router.post("/dynamicprompts", operation_id="parse_dynamicprompts", response_model=DynamicPromptsResponse)
def parse_dynamicprompts(
    prompt: Annotated[str, Body(description="The prompt to parse with dynamicprompts")],
    max_prompts: Annotated[int, Body(ge=1, le=10000, description="The max number of prompts to generate")] = 1000,
    combinatorial: Annotated[bool, Body(description="Whether to use the combinatorial generator")] = True,
    seed: Annotated[
        int | None, Body(description="The seed to use for random generation. Only used if not combinatorial")
    ] = None,
) -> DynamicPromptsResponse:
    """Expand a dynamic prompt. A sync route: FastAPI runs it in its thread pool, off the event loop."""
    return expand(prompt, max_prompts=max_prompts, combinatorial=combinatorial, seed=seed)


def expand(prompt: str, *, max_prompts: int, combinatorial: bool, seed: int | None) -> DynamicPromptsResponse:
    """The expanded prompts (`[""]` when there are none); on a syntax error the prompt itself and the message."""
    try:
        if combinatorial:
            prompts = CombinatorialPromptGenerator().generate(prompt, max_prompts=max_prompts)
        else:
            prompts = RandomPromptGenerator(seed=seed).generate(prompt, num_images=max_prompts)
    except Exception as error:  # pyparsing's ParseException above all; any parser failure is the prompt's fault
        logger.debug("dynamicprompts could not parse %r: %s", prompt, error)
        return DynamicPromptsResponse(prompts=[prompt], error=str(error))
    return DynamicPromptsResponse(prompts=[str(p) for p in prompts] or [""], error=None)
