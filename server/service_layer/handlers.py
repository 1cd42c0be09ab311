"""The handler `(cmd, uow)` of every command."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from server.service_layer import (
    account_links,
    accounts,
    billing,
    machines,
    members,
    privacy,
    trainings,
)
from server.service_layer import commands as cmds
from server.service_layer.auth_requests import answer_auth_request
from server.service_layer.configs import publish_configs
from server.service_layer.ingest import record_controller_status, record_controller_statuses
from server.service_layer.ingest_batch import ingest_batch, ingest_event
from server.service_layer.unit_of_work import SqlAlchemyUnitOfWork

HANDLERS: dict[type, Callable[[Any, SqlAlchemyUnitOfWork], Any]] = {
    cmds.IngestEvent: ingest_event,
    cmds.IngestBatch: ingest_batch,
    cmds.RecordControllerStatus: record_controller_status,
    cmds.RecordControllerStatuses: record_controller_statuses,
    cmds.PublishConfigs: publish_configs,
    cmds.AddMember: members.add_member,
    cmds.UpdateMember: members.update_member,
    cmds.SetRoles: members.set_roles,
    cmds.SetPassword: members.set_password,
    cmds.AddCategory: members.add_category,
    cmds.RegisterBadge: members.register_badge,
    cmds.SetBadgeStatus: members.set_badge_status,
    cmds.StartEnrollment: members.start_enrollment,
    cmds.AddMachine: machines.add_machine,
    cmds.UpdateMachine: machines.update_machine,
    cmds.SetOutOfService: machines.set_out_of_service,
    cmds.IssueControllerCredentials: machines.issue_controller_credentials,
    cmds.RevokeControllerCredentials: machines.revoke_controller_credentials,
    cmds.AddTrainingType: trainings.add_training_type,
    cmds.UpdateTrainingType: trainings.update_training_type,
    cmds.GrantTraining: trainings.grant_training,
    cmds.RevokeTraining: trainings.revoke_training,
    cmds.LockMachine: machines.lock_machine,
    cmds.AnswerAuthRequest: answer_auth_request,
    cmds.Login: accounts.login,
    cmds.Logout: accounts.logout,
    cmds.CreateApiToken: accounts.create_api_token,
    cmds.RevokeApiToken: accounts.revoke_api_token,
    cmds.EraseMember: privacy.erase_member,
    cmds.PurgeRawEvents: privacy.purge_raw_events,
    cmds.IssueAccountLink: account_links.issue_account_link,
    cmds.RequestPasswordReset: account_links.request_password_reset,
    cmds.UseAccountLink: account_links.use_account_link,
    cmds.ReportProblem: account_links.report_problem,
}
HANDLERS.update(billing.HANDLERS)
