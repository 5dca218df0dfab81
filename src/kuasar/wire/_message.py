"""The base of every :mod:`kuasar.wire` message: a frozen, slotted record with its field table.

Layer contract: bottom layer; imports only :mod:`kuasar.errors` and :mod:`kuasar.wire._codec` at
run time. Not :mod:`dataclasses`: a frozen, slotted ``@dataclass`` costs ~0.4 ms to *create*
(it ``exec``\\s six methods), ~6 ms for this package's 15 classes, most of the start-up budget of
``kuasarctl exec`` (issue 12). :class:`Message` gives the same behaviour from one set of generic
methods, and ``dataclass_transform`` tells the type checker so: keyword or positional construction
with every field defaulted, frozen, ``__slots__``, ``==`` by value, ``repr``, ``hash`` (map fields
left out of it).
"""

from __future__ import annotations

from kuasar.errors import ProtocolError
from kuasar.wire._codec import MAP, Malformed, Schema, decode, encode

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, ClassVar, Self, dataclass_transform
else:

    def dataclass_transform(**_: object) -> object:
        return lambda obj: obj


@dataclass_transform(frozen_default=True)
class _MessageMeta(type):
    """Turns the annotated fields of a message class into ``__slots__`` and a defaults table."""

    def __new__(mcls, name: str, bases: tuple[type, ...], namespace: dict[str, Any]) -> _MessageMeta:
        names = tuple(namespace.get("__annotations__", ()))
        missing = [n for n in names if n not in namespace]
        if missing:
            raise TypeError(f"{name}: fields {missing} need a default (proto3 zero value or None)")
        namespace["_defaults"] = {n: namespace.pop(n) for n in names}
        namespace["__slots__"] = names
        schema: Schema | None = namespace.get("_schema")
        if schema is not None:
            if sorted(names) != sorted(schema.by_name):
                raise TypeError(f"{name}: fields {names} and field table {tuple(schema.by_name)} differ")
            namespace["_hashed"] = tuple(n for n in names if schema.by_name[n].kind != MAP)
        return super().__new__(mcls, name, bases, namespace)


class Message(metaclass=_MessageMeta):
    """Base of every :mod:`kuasar.wire` message: encode to and decode from protobuf wire bytes.

    Subclasses declare annotated fields with defaults and a ``_schema`` field table; see
    :mod:`kuasar.wire.messages`.
    """

    if TYPE_CHECKING:
        _schema: ClassVar[Schema]
        _defaults: ClassVar[dict[str, Any]]
        _hashed: ClassVar[tuple[str, ...]]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        cls = type(self)
        defaults = cls._defaults
        if args:
            if len(args) > len(defaults):
                raise TypeError(f"{cls.__name__}() takes {len(defaults)} positional arguments")
            for name, value in zip(defaults, args, strict=False):
                if name in kwargs:
                    raise TypeError(f"{cls.__name__}() got multiple values for {name!r}")
                kwargs[name] = value
        for name, default in defaults.items():
            object.__setattr__(self, name, kwargs.pop(name, default))
        if kwargs:
            raise TypeError(f"{cls.__name__}() got unexpected fields {sorted(kwargs)}")
        if cls._schema.oneofs:
            self._check_oneofs()

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"{type(self).__name__} is frozen: cannot set {name!r}")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"{type(self).__name__} is frozen: cannot delete {name!r}")

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        return all(getattr(self, n) == getattr(other, n) for n in self._defaults)

    def __hash__(self) -> int:
        return hash((type(self), *(getattr(self, n) for n in self._hashed)))

    def __repr__(self) -> str:
        fields = ", ".join(f"{n}={getattr(self, n)!r}" for n in self._defaults)
        return f"{type(self).__name__}({fields})"

    def encode(self) -> bytes:
        """Serialize to the bytes protobuf's ``SerializeToString(deterministic=True)`` produces.

        Returns:
            The protobuf wire encoding: fields by number, proto3 zero values left out (oneof
            members and present submessages are always written), map entries in upb's
            deterministic order.

        Raises:
            ValueError: an integer outside its field's range, or a string that is not encodable
                as UTF-8 (a lone surrogate).
        """
        return encode(self)

    @classmethod
    def decode(cls, data: bytes) -> Self:
        """Parse protobuf wire bytes as this message, exactly as the generated stub would.

        Args:
            data: one serialized message.

        Returns:
            The message; absent fields have their defaults, unknown fields are dropped.

        Raises:
            ProtocolError: the bytes are truncated, malformed, carry invalid UTF-8 in a string
                field, or use groups.
        """
        try:
            return decode(cls, data)
        except Malformed as exc:
            where = f" (field {'.'.join(exc.path)})" if exc.path else ""
            raise ProtocolError(f"wire: cannot decode {cls.__name__}{where}: {exc.reason}") from None

    def SerializeToString(self) -> bytes:
        """:meth:`encode`, under protobuf's name."""
        return encode(self)

    @classmethod
    def FromString(cls, data: bytes, /) -> Self:
        """:meth:`decode`, under protobuf's name."""
        return cls.decode(data)

    def _check_oneofs(self) -> None:
        for group, names in self._schema.oneofs.items():
            if sum(getattr(self, name) is not None for name in names) > 1:
                raise ValueError(f"{type(self).__name__}: at most one of {group}'s {names} may be set")

    def _which(self, group: str) -> str | None:
        for name in self._schema.oneofs[group]:
            if getattr(self, name) is not None:
                return name
        return None
