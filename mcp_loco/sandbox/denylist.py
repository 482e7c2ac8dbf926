"""The secret deny-list: gitignore-style globs, case-folded, matched on resolved paths relative to the root.

A pattern without a slash (`*.pem`) matches any path component, so a denied directory hides everything
below it. A pattern with a slash (`.aws/**`) matches at any depth unless it starts with `/`, and
`dir/**` denies the directory itself as well as its content. Names and
patterns are compared after NFKC normalisation and case folding, so `.ENV` or a full-width `.ｅｎｖ` is
denied like `.env`. `allow` patterns are exceptions, checked against the whole path.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence

from mcp_loco.sandbox.globbing import gitignore_regex

CACHE_MAX = 50_000


def fold(text: str) -> str:
    """The form names and patterns are compared in: NFKC, then case-folded."""
    if text.isascii():
        return text.lower()  # NFKC leaves ASCII alone, and casefold is lower() there
    return unicodedata.normalize("NFKC", text).casefold()


def _compile(patterns: Sequence[str]) -> tuple[re.Pattern[str] | None, list[tuple[str | None, re.Pattern[str]]]]:
    """(regex for one path component, [(a literal component the path must hold, regex searched in the path)])."""
    names: list[str] = []
    paths: list[tuple[str | None, re.Pattern[str]]] = []
    for raw in patterns:
        p = fold(raw.strip()).rstrip("/")
        if not p or p.startswith("#"):
            continue
        if "/" not in p:
            names.append(gitignore_regex(p))
            continue
        anchored = p.startswith("/")
        body = p.lstrip("/") if anchored else p.removeprefix("**/")
        first = body.split("/", 1)[0]
        literal = None if any(c in first for c in "*?[\\") else first
        # A path pattern matches a path when it matches the path or any directory above it; `dir/**`
        # covers the directory itself too, so a secrets folder cannot even be listed.
        body = body.removesuffix("/**") or body
        regex = ("^" if anchored else "(?:^|/)") + gitignore_regex(body) + "(?:/|$)"
        paths.append((literal, re.compile(regex, re.DOTALL)))
    name_regex = re.compile("|".join(f"(?:{s})" for s in names), re.DOTALL) if names else None
    return name_regex, paths


class DenyList:
    """Decides which paths inside the root hold secrets no tool may show."""

    def __init__(self, deny: Sequence[str], allow: Sequence[str] = ()) -> None:
        self.deny = [p for p in deny if p.strip()]
        self.allow = [p for p in allow if p.strip()]
        self._names, self._paths = _compile(self.deny)
        self._allow_names, self._allow_paths = _compile(self.allow)
        # Names and directories repeat across paths, so most checks are a lookup (dict access is atomic
        # under the GIL, so concurrent calls share these safely).
        self._cache: dict[str, bool] = {}
        self._dirs: dict[str, tuple[bool, str, frozenset[str]]] = {}

    def denied(self, rel: str) -> bool:
        """True when `rel` (relative to the root, / separators) or a directory above it is denied."""
        if not rel or (self._names is None and not self._paths):
            return False
        directory, _, name = rel.strip("/").rpartition("/")
        dir_denied, folded_dir, dir_parts = self._directory(directory)
        folded_name = fold(name)
        path = f"{folded_dir}/{folded_name}" if folded_dir else folded_name
        hit = dir_denied or self._name_denied(folded_name)
        if not hit:
            # Most path patterns start with a literal directory (.aws/**): test for it before the regex.
            hit = any(
                (lit is None or lit in dir_parts or lit == folded_name) and rx.search(path) for lit, rx in self._paths
            )
        return hit and not self._allowed(path, folded_name)

    def _name_denied(self, folded: str) -> bool:
        found = self._cache.get(folded)
        if found is None:
            if len(self._cache) > CACHE_MAX:
                self._cache.clear()
            found = self._cache[folded] = self._names is not None and self._names.fullmatch(folded) is not None
        return found

    def _directory(self, directory: str) -> tuple[bool, str, frozenset[str]]:
        """(denied, folded form, folded components) of a directory; cached, as paths share directories."""
        known = self._dirs.get(directory)
        if known is not None:
            return known
        folded = fold(directory)
        parts = folded.split("/") if folded else []
        denied = any(self._name_denied(p) for p in parts) or any(
            (lit is None or lit in parts) and rx.search(folded) for lit, rx in self._paths
        )
        info = (denied, folded, frozenset(parts))
        if len(self._dirs) > CACHE_MAX:
            self._dirs.clear()
        self._dirs[directory] = info
        return info

    def _allowed(self, path: str, name: str) -> bool:
        if self._allow_names is not None and self._allow_names.fullmatch(name):
            return True
        return any(rx.search(path) for _, rx in self._allow_paths)

    def reason(self, rel: str) -> str:
        """The first deny pattern matching `rel` (for error messages)."""
        for pattern in self.deny:
            if DenyList([pattern]).denied(rel):
                return pattern
        return "the deny-list"

    def rg_excludes(self) -> list[str]:
        """Exclusion globs for ripgrep: the deny patterns no allow pattern overlaps (the rest are post-filtered)."""
        out: list[str] = []
        for pattern in self.deny:
            single = DenyList([pattern])
            if any(single.denied(a.strip("/*")) for a in self.allow):
                continue
            p = pattern.strip().rstrip("/")
            if "/" in p and not p.startswith(("/", "**/")):
                p = "**/" + p
            out.append("!" + p)
        return out


class ScopedDenyList(DenyList):
    """The deny-list of an explored directory, judged from the allowed root above it as well as from itself.

    Exploring `<repo>/.aws` or `<repo>/.git` must not turn `credentials` or `config` into harmless names:
    each path is also matched as `<scope>/<path>`, where the scope is the explored directory's path below
    the allowed root (or its own name when there is none).
    """

    def __init__(self, deny: Sequence[str], allow: Sequence[str], scope: str) -> None:
        super().__init__(deny, allow)
        self.scope = scope.strip("/")

    def denied(self, rel: str) -> bool:
        """True when `rel` is denied from the explored directory or from the allowed root."""
        if super().denied(rel):
            return True
        return bool(self.scope) and super().denied(f"{self.scope}/{rel}" if rel else self.scope)

    def reason(self, rel: str) -> str:
        """The first deny pattern matching `rel` from either place."""
        for pattern in self.deny:
            single = DenyList([pattern])
            if single.denied(rel) or (self.scope and single.denied(f"{self.scope}/{rel}".rstrip("/"))):
                return pattern
        return "the deny-list"
