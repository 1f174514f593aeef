from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import pytest

from relaunch.sandbox.paging import MAX_PER_PAGE, Page, PagingError, last_page, links, parse_page

BASE = "http://127.0.0.1:9/v2/droplets"


def test_parse_page_defaults_and_cap() -> None:
    assert parse_page({}) == Page(1, 20)
    assert parse_page({"page": ["3"], "per_page": ["500"]}) == Page(3, MAX_PER_PAGE)


@pytest.mark.parametrize(("query", "field"), [({"page": ["0"]}, "page"), ({"per_page": ["x"]}, "per_page")])
def test_parse_page_rejects_non_positive_integers(query: dict[str, list[str]], field: str) -> None:
    with pytest.raises(PagingError) as err:
        parse_page(query)
    assert err.value.field == field


def test_page_slice() -> None:
    assert Page(3, 2).slice(list(range(5))) == [4]
    assert Page(4, 2).slice(list(range(5))) == []


def test_last_page() -> None:
    assert [last_page(n, 2) for n in (0, 1, 2, 5)] == [1, 1, 1, 3]


def test_links_first_middle_last() -> None:
    query = {"tag_name": ["web"], "per_page": ["2"]}
    assert set(links(BASE, query, Page(1, 2), 5)["pages"]) == {"next", "last"}
    middle = links(BASE, query, Page(2, 2), 5)["pages"]
    assert set(middle) == {"first", "prev", "next", "last"}
    assert parse_qs(urlsplit(middle["next"]).query) == {"tag_name": ["web"], "page": ["3"], "per_page": ["2"]}
    assert middle["first"].startswith(BASE + "?")
    assert set(links(BASE, query, Page(3, 2), 5)["pages"]) == {"first", "prev"}
    assert links(BASE, {}, Page(1, 20), 0) == {"pages": {}}
