"""A stand-in for DJL Serving's Java ``RollingBatch`` loop, written from the documented protocol.

It keeps the in-flight requests in arrival order and, every step, sends ALL of
them in one ``Input``: ``batch_<iii>.<prop>`` properties and ``batch_<iii>.data``
/ ``batch_<iii>.seed`` content for a request's first step, empty data and no
properties afterwards (Java's ``Request.getRequest/getProperties/getSeed``).
The reply's ``batch_<i>.data`` records are decoded as ``Request.addResponse``
does and requests whose record says ``last`` are dropped (``removeIf(last)``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional

from djl_python.inputs import Input
from djl_python.outputs import Output
from djl_python.pair_list import PairList


@dataclass
class JavaRequest:
    name: str
    body: bytes
    properties: dict[str, str]
    seed: str
    next_token: Optional[str] = None  # Java's Request.nextToken: None until the first reply
    chunks: list[str] = field(default_factory=list)
    last: bool = False
    code: Optional[str] = None
    error: Optional[str] = None
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def text(self) -> str:
        return "".join(self.chunks)


class JavaRollingBatch:
    """Drive a worker with ``send(Input) -> Output`` exactly as RollingBatch.java would."""

    def __init__(self, send: Callable[[Input], Output]) -> None:
        self.send = send
        self.in_flight: list[JavaRequest] = []
        self.done: dict[str, JavaRequest] = {}
        self.reset_next = False
        self._seed = 1000

    def add(self, name: str, body: bytes | str, content_type: str = "application/json") -> JavaRequest:
        self._seed += 7
        req = JavaRequest(name, body.encode() if isinstance(body, str) else body,
                          {"Content-Type": content_type, "requestId": name}, str(self._seed))
        self.in_flight.append(req)
        return req

    def build_input(self) -> Input:
        props: dict[str, str] = {}
        content: PairList[bytes] = PairList()
        if self.reset_next:
            props["reset_rollingbatch"] = "true"
            self.reset_next = False
        for i, req in enumerate(self.in_flight):
            prefix = f"batch_{i:03d}."
            first = req.next_token is None
            if first:
                for k, v in req.properties.items():
                    props[prefix + k] = v
            content.add(prefix + "data", req.body if first else b"")
            if first:
                content.add(prefix + "seed", req.seed.encode())
        props["batch_size"] = str(len(self.in_flight))
        return Input(props, content)

    def step(self) -> Output:
        size = len(self.in_flight)
        out = self.send(self.build_input())
        if out.code != 200 or out.content.size() != size:
            # Java fails everything in flight and asks for a reset on the next batch.
            for req in self.in_flight:
                req.last, req.code, req.error = True, str(out.code), "Batch inference failed"
                self.done[req.name] = req
            self.in_flight.clear()
            self.reset_next = True
            return out
        for i, req in enumerate(self.in_flight):
            record = Output.binary_decode(out.content.value_at(i))
            prefix = f"batch_{i}_"
            req.headers.update({k[len(prefix):]: v for k, v in out.properties.items() if k.startswith(prefix)})
            req.next_token = record.get("data")
            req.last = (record.get("last") or "").lower() == "true"
            req.code, req.error = record.get("code"), record.get("error")
            if req.next_token:
                req.chunks.append(req.next_token)
        for req in [r for r in self.in_flight if r.last]:
            self.done[req.name] = req
        self.in_flight = [r for r in self.in_flight if not r.last]
        return out

    def run(self, arrivals: dict[int, list[tuple[str, str]]], max_steps: int = 500) -> dict[str, JavaRequest]:
        """Step until idle; ``arrivals[step]`` lists ``(name, body)`` added before that step."""
        step = 0
        while (self.in_flight or any(k >= step for k in arrivals)) and step < max_steps:
            for name, body in arrivals.get(step, []):
                self.add(name, body)
            if self.in_flight:
                self.step()
            step += 1
        assert not self.in_flight, "requests still in flight after max_steps"
        return self.done
