"""The run's input from a delivery: the endpoint's templates rendered over the payload.

The same safe rendering as the job's prompt (``scheduler.queue.render_prompt``): Django's template
language with no loaders, so a template reads the payload and runs no code. Templates are compiled
once per text (a process-wide cache), since every delivery of an endpoint renders the same ones."""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache
from typing import Any

from django.template import Context, Engine, Template, TemplateSyntaxError

_ENGINE = Engine(autoescape=False)


@lru_cache(maxsize=512)
def _compiled(text: str) -> Template:
    return _ENGINE.from_string(text)


def check_templates(templates: Mapping[str, str]) -> str:
    """ "" when every template parses, else what is wrong with the first that does not."""
    for name, text in templates.items():
        try:
            _compiled(text)
        except TemplateSyntaxError as exc:
            return f"{name}: the template does not parse: {exc}"
    return ""


def render_input(
    templates: Mapping[str, str], *, payload: Any, event: str, delivery: str, endpoint: str
) -> Any:
    """The run's input: each template rendered (text), or the whole delivery when there are none."""
    if not templates:
        return {"event": event, "delivery": delivery, "endpoint": endpoint, "payload": payload}
    context = Context({"payload": payload, "event": event, "delivery": delivery, "endpoint": endpoint})
    return {name: _compiled(text).render(context) for name, text in templates.items()}
