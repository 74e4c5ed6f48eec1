"""The KV fabric probe: a real NIXL transfer between a prefill node and a decode node.

Run on the engine image by the operator's probe Jobs, with the engines' fabric
settings (the KV-transfer ConfigMap's UCX environment) and the NIXL side-channel
port. Host memory over UCX: no GPU is needed, and the network path, the NIXL
handshake and the transport UCX picks are what vLLM's NixlConnector uses.

  serve --port P            (prefill node) registers a buffer, answers the NIXL
                            handshake on P, hands its buffer to the sender and waits
                            for the written bytes, then checks them
  send --target IP --port P (decode node) handshakes with the server, WRITEs a
                            pattern into its buffer and measures the transfer

Each prints one JSON line and writes it to --result-file (the container's
termination message): {"ok": true, "bytes", "seconds", "gbPerSecond",
"handshakeSeconds"} or {"ok": false, "cause", "detail"} with cause one of
handshake_refused, transport_unavailable, timeout, corrupted, nixl_unavailable.
Exit status 0 on success, 1 on failure.
"""

import argparse
import json
import os
import sys
import time


def emit(result, path):
    line = json.dumps(result, separators=(",", ":"))
    print(line, flush=True)
    if path:
        try:
            with open(path, "w") as f:
                f.write(line)
        except OSError as e:
            print(f"cannot write {path}: {e}", file=sys.stderr)
    return 0 if result.get("ok") else 1


def fail(cause, detail, path):
    detail = str(detail)
    if cause == "transport_unavailable":
        detail += f" (UCX_TLS={os.environ.get('UCX_TLS', 'unset')})"
    return emit({"ok": False, "cause": cause, "detail": detail[:400]}, path)


def load_nixl():
    try:
        from nixl_cu12._api import nixl_agent, nixl_agent_config  # noqa: F401
    except ImportError:
        from nixl._api import nixl_agent, nixl_agent_config  # noqa: F401
    return nixl_agent, nixl_agent_config


def wait(condition, timeout, step=0.005):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(step)
    return None


def pattern(size):
    import numpy as np

    return (np.arange(size, dtype=np.uint64) % 251).astype(np.uint8)


def agent_with(buf, name, port):
    """A NIXL agent listening on `port` (0: any) with `buf` registered; its
    transfer descriptors. Raises when UCX or the listener cannot start."""
    nixl_agent, nixl_agent_config = load_nixl()
    agent = nixl_agent(name, nixl_agent_config(True, True, port))
    addr, size = buf.ctypes.data, buf.nbytes
    agent.register_memory(agent.get_reg_descs([(addr, size, 0, "")], "DRAM"))
    return agent, agent.get_xfer_descs([(addr, size, 0)], "DRAM")


def serve(args):
    import numpy as np

    size = args.size_mib << 20
    buf = np.zeros(size, dtype=np.uint8)
    try:
        agent, descs = agent_with(buf, "probe-server", args.port)
    except Exception as e:  # the listener could not bind, or no UCX
        return fail("transport_unavailable", e, args.result_file)
    # The sender announces itself through the listener; then it gets the buffer.
    if not wait(lambda: agent.check_remote_metadata("probe-sender"), args.timeout):
        return fail("timeout", f"no sender handshake on port {args.port} within {args.timeout}s", args.result_file)
    try:
        agent.send_notif("probe-sender", b"DESCS" + agent.get_serialized_descs(descs))
    except Exception as e:
        return fail("transport_unavailable", e, args.result_file)

    def written():
        for msgs in agent.get_new_notifs().values():
            if any(m == b"WRITTEN" for m in msgs):
                return True
        return False

    if not wait(written, args.timeout):
        return fail("timeout", "the sender's write did not complete", args.result_file)
    if not np.array_equal(buf, pattern(size)):
        return fail("corrupted", "the bytes written differ from the bytes sent", args.result_file)
    return emit({"ok": True, "bytes": size, "role": "serve"}, args.result_file)


def send(args):
    size = args.size_mib << 20
    buf = pattern(size)
    try:
        agent, local = agent_with(buf, "probe-sender", 0)
    except Exception as e:
        return fail("transport_unavailable", e, args.result_file)

    started = time.monotonic()
    agent.fetch_remote_metadata("probe-server", args.target, args.port)
    agent.send_local_metadata(args.target, args.port)
    if not wait(lambda: agent.check_remote_metadata("probe-server"), args.timeout):
        return fail(
            "handshake_refused",
            f"no NIXL handshake with {args.target}:{args.port} within {args.timeout}s",
            args.result_file,
        )

    def remote_descs():
        for msgs in agent.get_new_notifs().values():
            for m in msgs:
                if m.startswith(b"DESCS"):
                    return m[5:]
        return None

    serialized = wait(remote_descs, args.timeout)
    if serialized is None:
        return fail("timeout", "the server never offered its buffer", args.result_file)
    handshake = time.monotonic() - started
    remote = agent.deserialize_descs(serialized)
    began = time.monotonic()
    try:
        handle = agent.initialize_xfer("WRITE", local, remote, "probe-server", b"WRITTEN")
        state = agent.transfer(handle)
    except Exception as e:
        return fail("transport_unavailable", e, args.result_file)

    def done():
        nonlocal state
        state = agent.check_xfer_state(handle)
        return state in ("DONE", "ERR")

    if not wait(done, args.timeout, step=0.0005):
        return fail("timeout", f"the {size}-byte write did not finish", args.result_file)
    if state == "ERR":
        return fail("transport_unavailable", "UCX reported the transfer failed", args.result_file)
    seconds = time.monotonic() - began
    return emit(
        {
            "ok": True,
            "role": "send",
            "bytes": size,
            "seconds": round(seconds, 6),
            "gbPerSecond": round(size / seconds / 1e9, 3),
            "handshakeSeconds": round(handshake, 3),
        },
        args.result_file,
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="role", required=True)
    for name in ("serve", "send"):
        p = sub.add_parser(name)
        p.add_argument("--port", type=int, required=True)
        p.add_argument("--size-mib", type=int, default=64)
        p.add_argument("--timeout", type=float, default=60.0)
        p.add_argument("--result-file", default="")
        if name == "send":
            p.add_argument("--target", required=True)
    args = parser.parse_args()
    try:
        load_nixl()
    except ImportError as e:
        return fail("nixl_unavailable", e, args.result_file)
    return serve(args) if args.role == "serve" else send(args)


if __name__ == "__main__":
    sys.exit(main())
