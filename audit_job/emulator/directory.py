"""The generated directory: users and apps of a simulated user pool. Pure, off by default.

Users are numbered 1..count and computed from (seed, index) when asked for, never stored, so a
million of them cost no memory: id `user-000001`, a Chinese name with its pinyin username,
an email, a status (Activated ~90 %, Suspended 4 %, Deactivated 3 %, Resigned 2 %, Archived
1 %), and a createdAt that grows with the index (one user a minute from 2021-01-01, plus
under a minute of jitter), so creation order is index order. Whether a user has *ever* logged
in to an app is a share (`login_share`) of a hash of (seed, index, the app's slot). Only the
changes made at runtime are stored: removed users and apps, disabled apps, added apps (added
users just raise the count).
"""

from __future__ import annotations

import bisect
import hashlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

USER_ID_PREFIX = "user-"
EMAIL_DOMAIN = "example.com"
EXTERNAL_ID_PREFIX = "ext-"
STATUSES = ("Activated", "Suspended", "Deactivated", "Resigned", "Archived")
# Cumulative upper bounds of a 16-bit draw per status, in STATUSES order.
_STATUS_EDGES = (58982, 61604, 63570, 64881, 65536)  # 90 %, 4 %, 3 %, 2 %, 1 %
_FAMILY = (
    ("王", "wang"), ("李", "li"), ("张", "zhang"), ("刘", "liu"), ("陈", "chen"), ("杨", "yang"),
    ("黄", "huang"), ("赵", "zhao"), ("吴", "wu"), ("周", "zhou"), ("徐", "xu"), ("孙", "sun"),
    ("马", "ma"), ("朱", "zhu"), ("胡", "hu"), ("郭", "guo"),
)  # fmt: skip
_GIVEN = (
    ("伟", "wei"), ("芳", "fang"), ("娜", "na"), ("敏", "min"), ("静", "jing"), ("丽", "li"),
    ("强", "qiang"), ("磊", "lei"), ("军", "jun"), ("洋", "yang"), ("勇", "yong"), ("艳", "yan"),
    ("杰", "jie"), ("娟", "juan"), ("涛", "tao"), ("明", "ming"),
)  # fmt: skip
_GENDERS = ("M", "F", "U")
CREATED_BASE_MS = 1_609_459_200_000  # 2021-01-01T00:00:00Z
CREATED_STEP_MS = 60_000
_LAST_LOGIN_SPAN_MS = 400 * 86_400_000
_SLOTS_PER_BLOCK = 32  # a 64-byte digest holds 32 16-bit login draws
APP_LOGO = "https://files.authing.co/authing-console/default-app-logo.png"
USER_PHOTO = "https://files.authing.co/authing-console/default-user-avatar.png"


@dataclass(frozen=True)
class App:
    slot: int  # position in the configured list; fixed for the app's life (it keys the hash)
    app_id: str
    name: str

    @property
    def identifier(self) -> str:
        return "".join(c if c.isalnum() else "-" for c in self.app_id.lower())

    @property
    def login_url(self) -> str:
        return f"https://{self.identifier}.authing.cn/login"


def parse_app(entry: str) -> tuple[str, str]:
    """`id` or `id=name` -> (id, name); the name defaults to the id."""
    app_id, sep, name = entry.partition("=")
    app_id, name = app_id.strip(), name.strip()
    return app_id, (name if sep and name else app_id)


def user_id(index: int) -> str:
    return f"{USER_ID_PREFIX}{index:06d}"


def iso_ms(epoch_ms: int) -> str:
    moment = datetime.fromtimestamp(epoch_ms / 1000, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{epoch_ms % 1000:03d}Z"


class Directory:
    def __init__(
        self,
        *,
        seed: int = 0,
        users: int = 0,
        apps: Sequence[str] = (),
        login_share: float = 0.3,
    ) -> None:
        self.seed = seed
        self.count = users
        self.login_threshold = round(login_share * 65536)
        self._apps: dict[str, App] = {}
        self._next_slot = 0
        self.add_apps(apps)
        self.removed: set[int] = set()
        self._removed_sorted: list[int] | None = []
        self.removed_other: set[str] = set()  # ids outside the directory said to be gone
        self.removed_apps: set[str] = set()
        self.disabled_apps: set[str] = set()

    @property
    def active(self) -> bool:
        """Whether the directory takes part in any answer (it does as soon as anything is set)."""
        return bool(
            self.count
            or self._apps
            or self.removed_other
            or self.removed_apps
            or self.disabled_apps
        )

    # -- users -------------------------------------------------------------------------------

    def resolve(self, identifier: str, id_type: str | None = None) -> int | None:
        """The index of the directory user named by `identifier`, removed users included; None
        when it names no directory user. Without `id_type` (check-session-status takes any
        identifier, spec 1) the form of the identifier decides."""
        if not self.count:
            return None
        if id_type is None:
            if "@" in identifier:
                id_type = "email"
            elif identifier.startswith(USER_ID_PREFIX):
                id_type = "user_id"
            elif identifier.startswith(EXTERNAL_ID_PREFIX):
                id_type = "external_id"
            else:
                id_type = "username"
        if id_type == "user_id":
            return self._numbered(identifier, USER_ID_PREFIX)
        if id_type == "external_id":
            return self._numbered(identifier, EXTERNAL_ID_PREFIX)
        if id_type == "email":
            name, at, domain = identifier.rpartition("@")
            if not at or domain != EMAIL_DOMAIN:
                return None
            identifier = name
        elif id_type != "username":
            return None  # phone, identity, sync_relation, custom_field: not modelled
        digits = identifier.rpartition(".")[2]
        if not digits.isdigit() or not digits.isascii():
            return None
        index = int(digits)
        if 1 <= index <= self.count and self.username(index) == identifier:
            return index
        return None

    def _numbered(self, identifier: str, prefix: str) -> int | None:
        digits = identifier[len(prefix) :]
        if not identifier.startswith(prefix) or not digits.isdigit() or not digits.isascii():
            return None
        index = int(digits)
        if 1 <= index <= self.count and f"{prefix}{index:06d}" == identifier:
            return index
        return None

    def exists(self, index: int) -> bool:
        return 1 <= index <= self.count and index not in self.removed

    def removed_sorted(self) -> list[int]:
        if self._removed_sorted is None:
            self._removed_sorted = sorted(self.removed)
        return self._removed_sorted

    def remove_users(self, identifiers: Iterable[str]) -> list[str]:
        """Make the users gone (user not found from now on); ids outside the directory too."""
        gone = []
        for identifier in identifiers:
            index = self.resolve(identifier, "user_id")
            if index is not None:
                if index not in self.removed:
                    self.removed.add(index)
                    self._removed_sorted = None
                    gone.append(identifier)
            elif identifier not in self.removed_other:
                self.removed_other.add(identifier)
                gone.append(identifier)
        return gone

    def add_users(self, count: int) -> range:
        """`count` more generated users; returns their indexes."""
        first = self.count + 1
        self.count += count
        return range(first, self.count + 1)

    def _profile(self, index: int) -> bytes:
        return hashlib.blake2b(b"%d\x00user\x00%d" % (self.seed, index), digest_size=16).digest()

    def status(self, index: int) -> str:
        draw = int.from_bytes(self._profile(index)[:2], "big")
        return STATUSES[bisect.bisect_right(_STATUS_EDGES, draw)]

    def username(self, index: int) -> str:
        return self.names(index)[1]

    def names(self, index: int) -> tuple[str, str]:
        """(name, username): `王芳` and `fang.wang.000042`."""
        digest = self._profile(index)
        family, given = _FAMILY[digest[2] % 16], _GIVEN[digest[3] % 16]
        return family[0] + given[0], f"{given[1]}.{family[1]}.{index:06d}"

    def created_at_ms(self, index: int) -> int:
        jitter = int.from_bytes(self._profile(index)[4:6], "big") % CREATED_STEP_MS
        return CREATED_BASE_MS + index * CREATED_STEP_MS + jitter

    # -- ever logged in --------------------------------------------------------------------

    def _logins(self, index: int, block: int) -> bytes:
        key = b"%d\x00login\x00%d\x00%d" % (self.seed, index, block)
        return hashlib.blake2b(key, digest_size=64).digest()

    def logged_in(self, index: int, app: App) -> bool:
        block, offset = divmod(app.slot, _SLOTS_PER_BLOCK)
        digest = self._logins(index, block)
        return int.from_bytes(digest[2 * offset : 2 * offset + 2], "big") < self.login_threshold

    def logged_in_apps(self, index: int) -> list[App]:
        """Listed apps (not removed) the user has ever logged in to, in slot order."""
        found, blocks = [], {}
        threshold = self.login_threshold
        for app in self.apps():
            block, offset = divmod(app.slot, _SLOTS_PER_BLOCK)
            digest = blocks.get(block)
            if digest is None:
                digest = blocks[block] = self._logins(index, block)
            if int.from_bytes(digest[2 * offset : 2 * offset + 2], "big") < threshold:
                found.append(app)
        return found

    # -- apps --------------------------------------------------------------------------------

    def add_apps(self, entries: Iterable[str]) -> list[App]:
        added = []
        for entry in entries:
            app_id, name = parse_app(entry)
            if not app_id or app_id in self._apps:
                continue
            app = App(self._next_slot, app_id, name)
            self._next_slot += 1
            self._apps[app_id] = app
            added.append(app)
        return added

    def app(self, app_id: str) -> App | None:
        """The directory app with that id, removed ones included."""
        return self._apps.get(app_id)

    def apps(self) -> list[App]:
        """Directory apps not removed (disabled ones included), in slot order."""
        removed = self.removed_apps
        return [app for app in self._apps.values() if app.app_id not in removed]

    # -- listing predicates (pure functions of an index, safe to run in a thread) --------------

    def predicate(
        self,
        *,
        statuses: frozenset[str] | None = None,
        logged_in_to: Sequence[App] | None = None,
        keywords: str | None = None,
    ) -> Callable[[int], bool] | None:
        """Index -> matches, for list-users' filters (all must hold); None matches everyone."""
        tests: list[Callable[[int], bool]] = []
        if statuses is not None:
            status = self.status
            tests.append(lambda index: status(index) in statuses)
        if logged_in_to is not None:
            tests.append(self._logged_in_any(logged_in_to))
        if keywords:
            needle, names = keywords.casefold(), self.names
            email_tail = f"@{EMAIL_DOMAIN}"

            def fuzzy(index: int) -> bool:
                name, username = names(index)
                return needle in name or needle in f"{username}{email_tail}".casefold()

            tests.append(fuzzy)
        if not tests:
            return None
        if len(tests) == 1:
            return tests[0]
        return lambda index: all(test(index) for test in tests)

    def _logged_in_any(self, apps: Sequence[App]) -> Callable[[int], bool]:
        by_block: dict[int, list[int]] = {}
        for app in apps:
            block, offset = divmod(app.slot, _SLOTS_PER_BLOCK)
            by_block.setdefault(block, []).append(2 * offset)
        plan = sorted(by_block.items())
        threshold, logins = self.login_threshold, self._logins

        def test(index: int) -> bool:
            for block, offsets in plan:
                digest = logins(index, block)
                for at in offsets:
                    if (digest[at] << 8 | digest[at + 1]) < threshold:
                        return True
            return False

        return test

    # -- records -------------------------------------------------------------------------------

    def user_dto(self, index: int, options: dict[str, Any] | None = None) -> dict[str, Any]:
        """UserDto as list-users answers it (the fields an audit reads, and the required ones)."""
        digest = self._profile(index)
        created = self.created_at_ms(index)
        name, username = self.names(index)
        status = self.status(index)
        apps = self.logged_in_apps(index)
        if apps:
            logins = len(apps) + digest[6]
            last_ms = created + int.from_bytes(digest[7:11], "big") % _LAST_LOGIN_SPAN_MS
            last_login: str | None = iso_ms(last_ms)
            last_app: str | None = apps[digest[14] % len(apps)].app_id
            last_ip: str | None = f"10.{digest[11]}.{digest[12]}.{digest[13]}"
        else:
            logins, last_ms, last_login, last_app, last_ip = 0, created, None, None, None
        dto: dict[str, Any] = {
            "userId": user_id(index),
            "createdAt": iso_ms(created),
            "updatedAt": iso_ms(max(created, last_ms)),
            "status": status,
            "workStatus": "Closed" if status == "Resigned" else "Active",
            "externalId": f"{EXTERNAL_ID_PREFIX}{index:06d}",
            "email": f"{username}@{EMAIL_DOMAIN}",
            "phone": None,
            "username": username,
            "name": name,
            "photo": USER_PHOTO,
            "loginsCount": logins,
            "lastLogin": last_login,
            "lastIp": last_ip,
            "lastLoginApp": last_app,
            "gender": _GENDERS[digest[15] % 3],
            "emailVerified": True,
            "phoneVerified": False,
            "userSourceType": "adminCreated",
            "signedUp": iso_ms(created),
        }
        options = options or {}
        if options.get("withCustomData"):
            dto["customData"] = {}
        if options.get("withIdentities"):
            dto["identities"] = []
        if options.get("withDepartmentIds"):
            dto["departmentIds"] = []
        return dto

    def app_dto(self, app: App, userpool_id: str) -> dict[str, Any]:
        """ApplicationDto as list-applications answers it (scalar fields; no nested configs)."""
        return {
            "appId": app.app_id,
            "appIdentifier": app.identifier,
            "appName": app.name,
            "appLogo": APP_LOGO,
            "appDescription": "",
            "appType": "web",
            "userPoolId": userpool_id,
            "isIntegrateApp": False,
            "defaultProtocol": "oidc",
            "redirectUris": [],
            "logoutRedirectUris": [],
            "initLoginUri": "",
            "ssoEnabled": False,
            "samlProviderEnabled": False,
            "oauthProviderEnabled": False,
            "casProviderEnabled": False,
            "customBrandingEnabled": False,
            "customSecurityEnabled": False,
        }

    def logged_in_app_dto(self, app: App) -> dict[str, str]:
        """UserLoggedInAppsDto: what get-user-loggedin-apps lists."""
        return {
            "appId": app.app_id,
            "appName": app.name,
            "appLogo": APP_LOGO,
            "appLoginUrl": app.login_url,
        }
