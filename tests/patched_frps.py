"""The original's patched frps (ttlv/frp v0.33.1 at 2a62ce2) as its dashboard answers:
it cannot be built here, so this peer serves what its source writes.

- Routes and auth: server/dashboard.go lines 40-51 (`GET /api/proxy/{type}` behind basic
  auth; utils/net/http.go lines 60-71 answer 401 with `WWW-Authenticate` otherwise).
- The list: server/dashboard_api.go lines 152-168 (`ProxyStatsInfo`, `GetProxyInfoResp`)
  as `getProxyStatsByType` (lines 192-224) fills it: `conf` is null and `status`
  "offline" for a proxy closed since frps started (models/consts: "online"/"offline");
  `unique_id` and `mac_address` are the frpc's Login's, `public_ip_address` frps's own
  `util.GetInternalIp()` (server/control.go line 462), the address it also posts to the
  adapter's `/frp_create` and `/frp_update` (lines 480, 497).
- `conf`: `TcpOutConf` (dashboard_api.go lines 94-97), that is models/config/proxy.go's
  `BaseProxyConf` (lines 104-141) with `LocalSvrConf` and `HealthCheckConf` flattened,
  as a NewProxy message fills it (`UnmarshalFromMsg`: no local address or health check
  reaches frps; frpc always sends `metas`), then `remote_port`, the port bound
  (server/proxy/tcp.go line 66: `pxy.cfg.RemotePort = pxy.realPort`).
- Go's encoding/json: compact, fields in declaration order; with no Content-Type set,
  net/http sniffs the body as `text/plain; charset=utf-8`.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import aiohttp
from aiohttp import web

ADDRESS = "10.1.11.38"


def frpc_unique_id(n: int) -> str:
    """A unique_id as the patched frpc makes one (utils/util/util.go `GetUniqueId`): the
    last 20 hex digits of a SHA-1."""
    return hashlib.sha1(str(n).encode()).hexdigest()[20:]


class PatchedFrps:
    """The dashboard of one patched frps. `nodes` maps each frpc's unique_id to the remote
    port of its proxy `ssh-<unique_id>` (frpc.ini's `[ssh-#unique-id#]`), or to None once
    the proxy closed: frps lists it offline until frps restarts."""

    def __init__(self, address: str = ADDRESS) -> None:
        self.address = address
        self.nodes: dict[str, int | None] = {}
        # Other tcp proxies of the frpcs: name -> (unique_id, remote port). frps lists in
        # no set order (a Go map); these come first.
        self.other_proxies: dict[str, tuple[str, int]] = {}
        self.listings = 0

    def app(self, user: str = "admin", password: str = "admin") -> web.Application:
        auth = aiohttp.encode_basic_auth(user, password)

        async def proxies(request: web.Request) -> web.Response:
            if request.headers.get("Authorization") != auth:
                return web.Response(
                    status=401,
                    text="Unauthorized\n",
                    headers={"WWW-Authenticate": 'Basic realm="Restricted"'},
                )
            self.listings += 1
            tcp = request.match_info["type"] == "tcp"  # every node's proxy is tcp
            return web.Response(
                text=self.listing() if tcp else '{"proxies":[]}',
                content_type="text/plain",
                charset="utf-8",
            )

        app = web.Application()
        app.router.add_get("/api/proxy/{type}", proxies)
        return app

    def listing(self) -> str:
        """The body of `GET /api/proxy/tcp`."""
        proxies = [self._proxy(name, uid, port) for name, (uid, port) in self.other_proxies.items()]
        proxies += [self._proxy(f"ssh-{uid}", uid, port) for uid, port in self.nodes.items()]
        return json.dumps({"proxies": proxies}, separators=(",", ":"))

    def _proxy(self, name: str, unique_id: str, port: int | None) -> dict[str, Any]:
        return {
            "name": name,
            "conf": None if port is None else _tcp_out_conf(name, port),
            "today_traffic_in": 0,
            "today_traffic_out": 0,
            "cur_conns": 0,
            "last_start_time": "03-14 13:07:20",
            "last_close_time": "" if port is not None else "03-14 13:09:02",
            "status": "online" if port is not None else "offline",
            "unique_id": unique_id,
            "mac_address": ":".join(unique_id[i : i + 2] for i in range(0, 12, 2)),
            "public_ip_address": self.address,
        }


def _tcp_out_conf(name: str, port: int) -> dict[str, Any]:
    return {
        "proxy_name": name,
        "proxy_type": "tcp",
        "use_encryption": False,
        "use_compression": False,
        "group": "",
        "group_key": "",
        "proxy_protocol_version": "",
        "bandwidth_limit": "",
        "metas": {},
        "local_ip": "",
        "local_port": 0,
        "plugin": "",
        "plugin_params": None,
        "health_check_type": "",
        "health_check_timeout_s": 0,
        "health_check_max_failed": 0,
        "health_check_interval_s": 0,
        "health_check_url": "",
        "remote_port": port,
    }
