//! Requests and instances (`/v1/sirs/…`): acknowledgement, instance status, the
//! instance list.

use super::*;

pub(super) fn known_request(shared: &Shared, request_id: &str) -> Result<RequestRecord, Response> {
    shared
        .read(|s| s.requests.get(request_id).cloned())
        .ok_or_else(|| {
            error(
                StatusCode::NOT_FOUND,
                format!("Cannot find request with id {request_id}"),
            )
        })
}

pub(super) async fn acknowledge(
    State(shared): State<Arc<Shared>>,
    Path(request_id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Answer {
    authorize(&shared, &headers, SIRS)?;
    let map = parse_body(&body)?;
    check_enum!(&map, "status", RequestStatusCode);
    check_enum!(&map, "capacityType", CapacityType);
    let capacity_type = present(&map, "capacityType")
        .and_then(Value::as_str)
        .map(str::to_string);
    let reservation = present(&map, "reservationId").is_some();
    if matches!(
        capacity_type.as_deref(),
        Some("RESERVED" | "RESERVED_BACKUP")
    ) && !reservation
    {
        return Err(bad_request(
            "ReservationId must be provided for capacityType: [RESERVED, RESERVED_BACKUP]",
        ));
    }
    let status = present(&map, "status")
        .and_then(Value::as_str)
        .and_then(RequestStatusCode::from_wire);
    let batch = present(&map, "messageBatchId")
        .and_then(Value::as_str)
        .map(str::to_string);
    let count = match present(&map, "instanceCount") {
        None => 0,
        Some(v) => v
            .as_u64()
            .ok_or_else(|| bad_request("JSON parse error: instanceCount must be an integer"))?
            as u32,
    };
    let request = known_request(&shared, &request_id)?;
    if !matches!(request.state, RequestState::Open | RequestState::Active) {
        return Err(error(
            StatusCode::PRECONDITION_FAILED,
            format!(
                "Request associated with given id is not in 'open' or 'active' state, existing request state is '{}'",
                request.state
            ),
        ));
    }
    let Some(status) = status else {
        // SIS switches on the status without a null check: a missing status is a 500.
        return Err(error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Internal Server Error",
        ));
    };
    match status {
        RequestStatusCode::PendingFulfillment => {
            if let Some(batch) = &batch
                && request
                    .batches
                    .iter()
                    .any(|b| &b.message_batch_id == batch && b.acked_instances.is_some())
            {
                // The same batch acknowledged again from the same cluster: accepted.
                return ok_empty();
            }
            let acked: u32 = request
                .batches
                .iter()
                .filter(|b| {
                    !matches!(
                        b.status,
                        Some(RequestStatusCode::CannotFulfill | RequestStatusCode::ScheduleExpired)
                    )
                })
                .filter_map(|b| b.acked_instances)
                .sum();
            if acked + count > request.instance_count {
                return Err(error(
                    StatusCode::PRECONDITION_FAILED,
                    format!("The request is {request_id} is already fulfilled."),
                ));
            }
            shared.update(|s| {
                let record = s.requests.get_mut(&request_id).expect("checked above");
                record.status_code = RequestStatusCode::PendingFulfillment;
                if let Some(batch) = batch {
                    match record
                        .batches
                        .iter_mut()
                        .find(|b| b.message_batch_id == batch)
                    {
                        Some(b) => {
                            b.acked_instances = Some(count);
                            b.status = Some(status);
                        }
                        None => record.batches.push(BatchRecord {
                            message_batch_id: batch,
                            acked_instances: Some(count),
                            status: Some(status),
                        }),
                    }
                }
            });
            ok_empty()
        }
        RequestStatusCode::CannotFulfill | RequestStatusCode::ScheduleExpired => {
            let Some(batch) = batch else {
                if status == RequestStatusCode::CannotFulfill {
                    return Err(bad_request(
                        "messageBatchId must be provided for cannot-fulfill status update",
                    ));
                }
                return ok_empty();
            };
            if !request.batches.iter().any(|b| b.message_batch_id == batch) {
                if status == RequestStatusCode::ScheduleExpired {
                    return ok_empty();
                }
                return Err(error(
                    StatusCode::NOT_FOUND,
                    format!("RequestId {request_id} or messageBatchId {batch} doesn't exist"),
                ));
            }
            shared.update(|s| {
                let record = s.requests.get_mut(&request_id).expect("checked above");
                if let Some(b) = record
                    .batches
                    .iter_mut()
                    .find(|b| b.message_batch_id == batch)
                {
                    b.status = Some(status);
                }
            });
            ok_empty()
        }
        _ => Err(bad_request(
            "'status' field in request body must be '[schedule-expired, pending-fulfillment, cannot-fulfill]'",
        )),
    }
}

pub(super) async fn instance_status(
    State(shared): State<Arc<Shared>>,
    Path((request_id, instance_id)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Answer {
    authorize(&shared, &headers, SIRS)?;
    let map = parse_body(&body)?;
    check_enum!(&map, "action", RequestAction);
    check_enum!(&map, "instanceState", InstanceState);
    check_enum!(&map, "requestState", RequestState);
    check_enum!(&map, "status", InstanceStatus);
    check_enum!(&map, "capacityType", CapacityType);
    not_null(&map, "instanceState", "instanceState must not be null")?;
    not_null(&map, "requestState", "requestState must not be null")?;
    not_null(&map, "status", "status must not be null")?;
    let update: InstanceStatusUpdate = typed(map)?;
    let request = known_request(&shared, &request_id)?;
    let record = |shared: &Shared, activate: bool| {
        shared.update(|s| {
            let r = s.requests.get_mut(&request_id).expect("checked above");
            if activate && r.state == RequestState::Open {
                r.state = RequestState::Active;
            }
            let instance = r
                .instances
                .entry(instance_id.clone())
                .or_insert(InstanceRecord {
                    instance_state: update.instance_state,
                    status: update.status,
                    request_state: update.request_state,
                    action: update.action,
                    termination_cause: None,
                    system_failure: None,
                    health_info: HealthInfo::default(),
                    instance_ips: Vec::new(),
                    updates: 0,
                    history: Vec::new(),
                });
            instance.instance_state = update.instance_state;
            instance.status = update.status;
            instance.request_state = update.request_state;
            instance.action = update.action;
            instance.termination_cause = update.termination_cause.clone();
            instance.system_failure = update.system_failure.clone();
            instance.health_info = update.health_info.clone();
            instance.instance_ips = update.instance_ips.clone();
            instance.updates += 1;
            instance.history.push(update.instance_state);
            if r.state == RequestState::Closed
                || r.instances
                    .values()
                    .all(|i| i.instance_state == InstanceState::Terminated)
                    && r.deployment_id
                        .as_ref()
                        .is_some_and(|d| s.deployments.get(d).is_some_and(|d| d.undeployed))
            {
                r.state = RequestState::Closed;
            }
        })
    };
    if update.status.is_termination() {
        record(&shared, false);
        return ok_empty();
    }
    match request.state {
        RequestState::Open | RequestState::Active => {
            let status_ok = match request.state {
                RequestState::Open => request.status_code == RequestStatusCode::PendingFulfillment,
                _ => matches!(
                    request.status_code,
                    RequestStatusCode::PendingFulfillment | RequestStatusCode::Fulfilled
                ),
            };
            if !status_ok {
                return Err(error(
                    StatusCode::PRECONDITION_FAILED,
                    format!(
                        "Invalid request status {} for instance request with id {request_id}",
                        request.status_code
                    ),
                ));
            }
            if update.status != InstanceStatus::Fulfilled {
                return Err(bad_request(format!(
                    "Specified status {} for instance with id {instance_id} is invalid",
                    update.status
                )));
            }
            check_fulfillment(&update)?;
            record(&shared, true);
            ok_empty()
        }
        RequestState::Closed => {
            if update.status == InstanceStatus::Fulfilled {
                check_fulfillment(&update)?;
                return Err(error(
                    StatusCode::PRECONDITION_FAILED,
                    format!("Instance request with id {request_id} is closed"),
                ));
            }
            Err(bad_request(format!(
                "Specified status {} for instance with id {instance_id} is invalid",
                update.status
            )))
        }
        other => Err(error(
            StatusCode::PRECONDITION_FAILED,
            format!("Invalid state {other} for instance request with id {request_id}"),
        )),
    }
}

/// A `fulfilled` update must carry an instance-request action, `requestState: active` and
/// `instanceState` starting or running (`InstanceUpdateService.validateInstanceFulfillmentRequest`).
pub(super) fn check_fulfillment(update: &InstanceStatusUpdate) -> Result<(), Response> {
    let Some(action) = update.action else {
        // SIS dereferences the action without a null check.
        return Err(error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Internal Server Error",
        ));
    };
    if !action.requests_instances() {
        return Err(error(
            StatusCode::PRECONDITION_FAILED,
            format!("Invalid action {action} for updating instance status"),
        ));
    }
    if update.request_state != RequestState::Active {
        return Err(error(
            StatusCode::PRECONDITION_FAILED,
            format!(
                "Invalid request state {0} for updating instance status, provided state {0} expected state ACTIVE",
                update.request_state
            ),
        ));
    }
    if !matches!(
        update.instance_state,
        InstanceState::Starting | InstanceState::Running
    ) {
        return Err(error(
            StatusCode::PRECONDITION_FAILED,
            format!(
                "Invalid instance state {} for a fulfilled instance; expected starting or running",
                update.instance_state
            ),
        ));
    }
    Ok(())
}

pub(super) async fn instances(
    State(shared): State<Arc<Shared>>,
    Path(cluster_id): Path<String>,
    headers: HeaderMap,
) -> Answer {
    authorize(&shared, &headers, INSTANCES)?;
    let list = shared.read(|s| s.active_instances(&cluster_id));
    ok_json(InstanceList {
        instances: Some(list),
    })
}
