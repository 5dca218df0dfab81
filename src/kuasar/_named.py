"""Named string constants for ``kuasarctl exec``'s start-up path, without ``enum``.

Layer contract: bottom leaf; imports nothing. ``import enum`` loads ``functools``, ``collections``,
``operator``, ``types`` and ``reprlib`` (≈ 4 ms of the ≈ 10 ms a one-shot ``exec`` may spend over
the interpreter's own start, issue 12), so the few constant sets that path needs (``GuestKind``,
``ExecPath``, ``StdinMode``) subclass :class:`Named` instead. A member is an instance of its class
(compare with ``is``), equal to its text, serialised by ``json`` as its text, with ``.value`` and
``.name`` as an enum member has; ``members()`` lists them in definition order.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import ClassVar, Self


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

    @classmethod
    def members(cls) -> tuple[Self, ...]:
        """Every member, in definition order."""
        return tuple(getattr(cls, name) for name in cls._names.values())

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
