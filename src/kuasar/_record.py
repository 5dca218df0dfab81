"""Frozen, slotted records without :mod:`dataclasses`, and named string constants without
:mod:`enum`, for the modules on ``kuasarctl exec``'s start-up path.

Layer contract: leaf; no imports at run time. ``import dataclasses`` costs several milliseconds
(it pulls in ``inspect``), and creating each dataclass ``exec``\\s its methods (~0.4 ms); a
:class:`Record` subclass is made by one metaclass call and shares one set of generic methods.
``dataclass_transform`` tells the type checker, so construction is checked as for a dataclass.

Fields are the class's annotated names (``ClassVar`` ones excluded), in order, a subclass's after its
bases'; a field without a default is required. Records are frozen, compare equal by class and
values, hash by them, and have a ``repr``; :meth:`Record.replace` and :meth:`Record.as_dict` stand
in for ``dataclasses.replace`` and ``asdict``. A ``__post_init__`` method, if defined, runs after
``__init__`` (to validate).

``import enum`` loads ``functools``, ``collections``, ``operator``, ``types`` and ``reprlib`` (≈ 4 ms
of the ≈ 10 ms a one-shot ``exec`` may spend over the interpreter's own start, issue 12), so the few
constant sets that path needs (``GuestKind``, ``ExecPath``, ``StdinMode``) subclass :class:`Named`
instead. A member is an instance of its class (compare with ``is``), equal to its text, serialised
by ``json`` as its text, with ``.value`` and ``.name`` as an enum member has.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, ClassVar, Self, dataclass_transform
else:

    def dataclass_transform(**_: object) -> object:
        return lambda obj: obj


_MISSING: Any = object()
_CLASS_VARS = ("ClassVar", "typing.ClassVar")


@dataclass_transform(frozen_default=True)
class _RecordMeta(type):
    def __new__(mcls, name: str, bases: tuple[type, ...], namespace: dict[str, Any]) -> _RecordMeta:
        annotations = namespace.get("__annotations__", {})
        own = [
            n for n, kind in annotations.items() if not str(kind).startswith(("ClassVar", "typing.ClassVar"))
        ]
        fields: dict[str, Any] = {}
        for base in reversed(bases):
            fields.update(getattr(base, "_fields", {}))
        for field in own:
            fields[field] = namespace.pop(field, _MISSING)
        namespace["_fields"] = fields
        namespace["__slots__"] = (
            tuple(n for n in own if n not in getattr(bases[0], "_fields", {})) if bases else ()
        )
        return super().__new__(mcls, name, bases, namespace)


class Record(metaclass=_RecordMeta):
    """Base of a frozen record; see the module docstring."""

    __slots__ = ()
    if TYPE_CHECKING:
        _fields: ClassVar[dict[str, Any]]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        cls = type(self)
        fields = cls._fields
        if len(args) > len(fields):
            raise TypeError(f"{cls.__name__}() takes {len(fields)} positional arguments, got {len(args)}")
        for field, value in zip(fields, args, strict=False):
            if field in kwargs:
                raise TypeError(f"{cls.__name__}() got multiple values for {field!r}")
            kwargs[field] = value
        for field, default in fields.items():
            if field in kwargs:
                value = kwargs.pop(field)
            elif default is _MISSING:
                raise TypeError(f"{cls.__name__}() missing required field {field!r}")
            else:
                value = default
            object.__setattr__(self, field, value)
        if kwargs:
            raise TypeError(f"{cls.__name__}() got unexpected fields {sorted(kwargs)}")
        post_init = getattr(self, "__post_init__", None)
        if post_init is not None:
            post_init()

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"{type(self).__name__} is frozen: cannot set {name!r}")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"{type(self).__name__} is frozen: cannot delete {name!r}")

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        return all(getattr(self, n) == getattr(other, n) for n in self._fields)

    def __hash__(self) -> int:
        return hash((type(self), *(getattr(self, n) for n in self._fields)))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{n}={getattr(self, n)!r}' for n in self._fields)})"

    def as_dict(self) -> dict[str, Any]:
        """The fields and their values, in order (``dataclasses.asdict`` without the recursion)."""
        return {n: getattr(self, n) for n in self._fields}

    def replace(self, **changes: Any) -> Self:
        """A copy with some fields changed (validated again by ``__post_init__``)."""
        return type(self)(**{**self.as_dict(), **changes})

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        """The record's field names, in order."""
        return tuple(cls._fields)


class Named(str):
    """A string constant with a name; subclasses declare ``NAME: ClassVar[Sub]`` and call
    :meth:`define` once after their body."""

    __slots__ = ()
    _names: ClassVar[dict[str, str]]

    @classmethod
    def define(cls, **members: str) -> None:
        """Create the members (``NAME=value`` each) as class attributes."""
        cls._names = {}
        for name, value in members.items():
            setattr(cls, name, cls(value))
            cls._names[value] = name

    @property
    def value(self) -> str:
        """The member's text (what ``-o json`` prints)."""
        return str.__str__(self)

    @property
    def name(self) -> str:
        """The member's attribute name (``KUASAR_AGENT``)."""
        return self._names[self.value]

    def __repr__(self) -> str:
        return f"{type(self).__name__}.{self.name}"
