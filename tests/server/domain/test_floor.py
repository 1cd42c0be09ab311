"""The live state shown for a machine."""

from __future__ import annotations

from server.domain.floor import MachineState, machine_state


def test_machine_state_free_when_online_and_unused() -> None:
    assert (
        machine_state(controller_online=True, out_of_service=False, in_use=False)
        is MachineState.FREE
    )


def test_machine_state_in_use_even_when_link_dropped() -> None:
    assert (
        machine_state(controller_online=False, out_of_service=False, in_use=True)
        is MachineState.IN_USE
    )


def test_machine_state_offline_when_controller_gone() -> None:
    assert (
        machine_state(controller_online=False, out_of_service=False, in_use=False)
        is MachineState.OFFLINE
    )


def test_machine_state_out_of_service_when_flagged() -> None:
    assert (
        machine_state(controller_online=True, out_of_service=True, in_use=False)
        is MachineState.OUT_OF_SERVICE
    )
