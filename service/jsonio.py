"""JSON in and out, in one place: orjson (numpy arrays included) and a nesting limit on what is parsed."""

from __future__ import annotations

from typing import Any

import orjson

from service.errors import BadRequest, ServiceError

_CONTAINER_TYPES = frozenset({dict, list})  # parsed JSON holds these exact types


def dumps(content: Any) -> bytes:
    return orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY)


def json_depth(value: Any, limit: int) -> int:
    """Nesting depth of parsed JSON, stopping past `limit`. Lists of scalars are scanned at C speed
    (`map(type, ...)`), not walked: a scalar first item must not hide deeper items behind it."""
    depth, level = 0, [value]
    while level:
        depth += 1
        if depth > limit:
            return depth
        children: list[Any] = []
        for item in level:
            if isinstance(item, dict):
                children.extend(v for v in item.values() if isinstance(v, (dict, list)))
            elif isinstance(item, list) and item and (isinstance(item[0], (dict, list))
                                                      or not _CONTAINER_TYPES.isdisjoint(map(type, item))):
                children.extend(v for v in item if isinstance(v, (dict, list)))
        level = children
    return depth


def parse_json(body: bytes, max_depth: int, error: type[ServiceError] = BadRequest) -> Any:
    if not body.strip():
        raise error("request body is empty; send a JSON object")
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise error(f"request body is not valid JSON: {exc}") from exc
    if json_depth(parsed, max_depth) > max_depth:
        raise error(f"JSON nesting deeper than the max_json_depth limit of {max_depth}")
    return parsed
