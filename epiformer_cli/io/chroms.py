"""Chromosome-name resolution between files (``chr1``/``1``, ``chrX``/``X``, ``chrM``/``MT``/``M``).

Every place that matches names across a FASTA, a bigWig, a BED or a VCF goes through this one
table, so a UCSC-named genome works with Ensembl-named tracks and the other way round. Names that
match exactly always win over an alias.
"""

from __future__ import annotations

from typing import Dict, Iterable, List, Mapping, Optional, Sequence

from epiformer_cli.errors import ChromosomeMismatchError

#: canonical key -> names that mean the same chromosome. Numbered and lettered chromosomes are
#: handled by stripping or adding "chr"; only the mitochondrion needs a table of its own.
_MITO = ("chrM", "chrMT", "MT", "M")


def alias_key(name: str) -> str:
    """The naming-convention-free key of a chromosome name: ``chr1``, ``1`` and ``Chr1`` -> ``1``.

    Mitochondrial names (chrM, chrMT, MT, M) all map to ``M``.
    """
    if name in _MITO:
        return "M"
    lowered = name.lower()
    if lowered.startswith("chr") and len(name) > 3:
        return name[3:]
    return name


def resolve_name(name: str, available: Iterable[str]) -> Optional[str]:
    """The name in ``available`` that means chromosome ``name``, or None.

    An exact match wins; otherwise the first name in ``available`` with the same alias key.
    """
    available = list(available)
    if name in available:
        return name
    key = alias_key(name)
    for candidate in available:
        if alias_key(candidate) == key:
            return candidate
    return None


def resolve_names(names: Optional[Sequence[str]], available: Sequence[str], option: str, source: str) -> List[str]:
    """User-given chromosome names (``--chroms chr1,2``) resolved against ``available`` (a FASTA's
    names, aliases allowed), in the order given, duplicates dropped.

    Raises:
        UsageError: a name ``source`` does not have, naming the option and a few names it has.
    """
    from epiformer_cli.errors import UsageError

    out: List[str] = []
    for name in names or []:
        found = resolve_name(name, available)
        if found is None:
            raise UsageError(f"{option}: chromosome {name!r} is not in {source} (it has {', '.join(available[:6])}"
                             f"{', ...' if len(available) > 6 else ''})")
        if found not in out:
            out.append(found)
    return out


class NameResolver:
    """Resolve many names (e.g. a BED's, line by line) against one file's chromosomes, each
    distinct name once: ``resolver(name)`` -> the available name, or None if there is none.

    ``preview``: the first few available names, for a message naming what the file has.
    """

    def __init__(self, available: Iterable[str]):
        self.available = list(available)
        self._resolved: Dict[str, Optional[str]] = {}

    def __call__(self, name: str) -> Optional[str]:
        if name not in self._resolved:
            self._resolved[name] = resolve_name(name, self.available)
        return self._resolved[name]

    @property
    def preview(self) -> str:
        return ", ".join(self.available[:5]) + (", ..." if len(self.available) > 5 else "")


class ChromosomeMap:
    """A fixed mapping from the names of one file (the query) to those of another (the target).

    Build it once per pair of files with :func:`match_chromosomes`; lookups are dictionary reads.
    """

    def __init__(self, mapping: Mapping[str, str], query_label: str, target_label: str):
        self._mapping: Dict[str, str] = dict(mapping)
        self.query_label = query_label
        self.target_label = target_label

    def __contains__(self, name: str) -> bool:
        return name in self._mapping

    def get(self, name: str) -> Optional[str]:
        """The target's name for query chromosome ``name``, or None if the target lacks it."""
        return self._mapping.get(name)

    def renamed(self) -> Dict[str, str]:
        """Only the pairs whose names differ (what an ``alias`` flag reports)."""
        return {q: t for q, t in self._mapping.items() if q != t}

    def as_dict(self) -> Dict[str, str]:
        return dict(self._mapping)


def _preview(names: Sequence[str], n: int = 5) -> str:
    shown = ", ".join(names[:n])
    return shown + (f", ... ({len(names)} in all)" if len(names) > n else "")


def match_chromosomes(
    query: Sequence[str],
    target: Sequence[str],
    query_label: str,
    target_label: str,
    require_any: bool = True,
) -> ChromosomeMap:
    """Match every chromosome name of ``query`` to the name ``target`` uses for it.

    Args:
        query: names as one file has them (e.g. the FASTA's, in its order).
        target: names as the other file has them (e.g. a bigWig's header).
        query_label / target_label: what to call the two files in an error (usually their paths).
        require_any: raise when no chromosome matches at all (the usual sign of the wrong file or
            a naming scheme the alias table does not know).

    Returns:
        A :class:`ChromosomeMap` holding the query chromosomes that the target has.
    """
    target = list(target)
    exact = set(target)
    by_key: Dict[str, str] = {}
    for name in target:
        by_key.setdefault(alias_key(name), name)
    mapping: Dict[str, str] = {}
    for name in query:
        if name in exact:
            mapping[name] = name
        else:
            other = by_key.get(alias_key(name))
            if other is not None:
                mapping[name] = other
    if require_any and not mapping:
        raise ChromosomeMismatchError(
            f"no chromosome names in common between {query_label} ({_preview(list(query))}) and "
            f"{target_label} ({_preview(target)}), even after aliasing chr1/1, chrX/X, chrM/MT: "
            "check that both files are for the same genome assembly"
        )
    return ChromosomeMap(mapping, query_label, target_label)


def missing_from(query: Sequence[str], chrom_map: ChromosomeMap) -> List[str]:
    """Query chromosomes that the target of ``chrom_map`` does not have, in query order."""
    return [name for name in query if name not in chrom_map]
