"""serving.gateway.auth: bearer tokens for the OpenAI routes and the admin routes."""

from __future__ import annotations

import pytest

from serving.gateway.auth import ADMIN_ACTOR, AdminDenied, ApiKeys, bearer_token, check_admin


@pytest.mark.parametrize(("header", "token"), [
    pytest.param(b"Bearer abc", b"abc", id="bearer"),
    pytest.param(b"bearer  abc ", b"abc", id="any-case-and-spaces"),
    pytest.param(b"Basic abc", None, id="other-scheme"),
    pytest.param(b"Bearer ", None, id="empty"),
    pytest.param(None, None, id="absent"),
])
def test_bearer_token(header: bytes | None, token: bytes | None) -> None:
    assert bearer_token(header) == token


def test_api_keys() -> None:
    keys = ApiKeys({"k1", "k2"})
    assert keys.required
    assert keys.allows(b"Bearer k2")
    assert not keys.allows(b"Bearer k3")
    assert not keys.allows(None)
    assert not ApiKeys(()).required


def test_admin_token() -> None:
    assert check_admin("secret", b"Bearer secret") == ADMIN_ACTOR
    with pytest.raises(AdminDenied, match=r"need `Authorization: Bearer \$REG_ADMIN_TOKEN`"
                       ) as e:
        check_admin("secret", b"Bearer wrong")
    assert e.value.status == 401
    with pytest.raises(AdminDenied, match=r"disabled: start the gateway with REG_ADMIN_TOKEN"
                       ) as e:
        check_admin(None, b"Bearer anything")
    assert e.value.status == 403
