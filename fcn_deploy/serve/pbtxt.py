"""A small writer for protobuf text format (what Triton's ``config.pbtxt`` is).

Values: ``str`` -> quoted string, :class:`Enum` -> bare enum name, ``bool``/``int``/``float``,
``dict`` -> nested message, ``list`` of scalars -> ``[a, b]``, ``list`` of dicts -> repeated
message ``field [ {...}, {...} ]``, :class:`Map` -> one ``field { key: .. value: .. }`` block
per entry, :class:`Comment` values in a dict -> ``# ...`` lines. What it writes is then parsed
with Triton's own ``model_config_pb2`` by :mod:`fcn_deploy.serve.check`, so a mistake here is
caught there rather than by Triton.
"""

from __future__ import annotations

import json
from typing import Any, Dict, List


class Enum(str):
    """An enum value: written without quotes."""


class Comment(str):
    """A ``# comment`` line (as a dict value; the key is ignored)."""


class Map(list):
    """A protobuf map: list of (key, value) pairs."""


def _quote(s: str) -> str:
    # JSON string escapes (\" \\ \n \t \uXXXX for control chars) are valid text-format escapes
    # except \u; ensure_ascii=False keeps non-ASCII as UTF-8, which text format accepts.
    text = json.dumps(str(s), ensure_ascii=False)
    return text


def _scalar(v: Any) -> str:
    if isinstance(v, Enum):
        return str(v)
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return repr(v)
    if isinstance(v, str):
        return _quote(v)
    raise TypeError(f"cannot write {type(v).__name__} as a protobuf scalar")


def _lines(msg: Dict[str, Any], indent: int) -> List[str]:
    pad = "  " * indent
    out: List[str] = []
    for key, value in msg.items():
        if isinstance(value, Comment):
            out.extend(f"{pad}# {line}".rstrip() for line in str(value).splitlines())
        elif value is None:
            continue
        elif isinstance(value, Map):
            for k, v in value:
                out.append(f"{pad}{key} {{")
                out.append(f"{pad}  key: {_scalar(k)}")
                if isinstance(v, dict):
                    out.append(f"{pad}  value {{")
                    out.extend(_lines(v, indent + 2))
                    out.append(f"{pad}  }}")
                else:
                    out.append(f"{pad}  value: {_scalar(v)}")
                out.append(f"{pad}}}")
        elif isinstance(value, dict):
            out.append(f"{pad}{key} {{")
            out.extend(_lines(value, indent + 1))
            out.append(f"{pad}}}")
        elif isinstance(value, list):
            if value and all(isinstance(v, dict) for v in value):
                out.append(f"{pad}{key} [")
                for i, v in enumerate(value):
                    out.append(f"{pad}  {{")
                    out.extend(_lines(v, indent + 2))
                    out.append(f"{pad}  }}{',' if i < len(value) - 1 else ''}")
                out.append(f"{pad}]")
            else:
                out.append(f"{pad}{key}: [ {', '.join(_scalar(v) for v in value)} ]")
        else:
            out.append(f"{pad}{key}: {_scalar(value)}")
    return out


def dumps(msg: Dict[str, Any]) -> str:
    """The message as protobuf text format (ends with a newline)."""
    return "\n".join(_lines(msg, 0)) + "\n"
