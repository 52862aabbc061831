"""The ``table`` asset is observed by its sensor's tick (no run): DescribeTable's item count,
stream and PITR status recorded as an observation of ``dynamodb/<t>/table``."""

import dagster as dg

from dynamo_cdc.config import dagster_safe_name
from dynamo_cdc.dagster import DynamoCdcComponent


def test_the_table_sensor_records_an_observation_of_the_live_table(local_aws, clients, make_table):
    table = make_table()
    for i in range(7):
        clients.dynamodb.put_item(TableName=table, Item={"pk": {"S": f"k{i}"}})
    component = DynamoCdcComponent.resolve_from_yaml(
        f"tables: ['{table}']\nendpoint_url: {local_aws.endpoint_url}\nregion: us-east-1\n"
    )
    defs = dg.component_defs(component=component)
    safe = dagster_safe_name(table)
    sensor = next(s for s in defs.sensors if s.name == f"{safe}_table_sensor")
    with dg.build_sensor_context(resources={"dynamodb": defs.resources["dynamodb"]}) as context:
        result = sensor(context)
    assert not result.run_requests
    (observation,) = result.asset_events
    assert isinstance(observation, dg.AssetObservation)
    assert observation.asset_key == dg.AssetKey(["dynamodb", safe, "table"])
    metadata = {k: getattr(v, "value", v) for k, v in observation.metadata.items()}
    described = clients.dynamodb.describe_table(TableName=table)["Table"]
    assert metadata["dagster/row_count"] == described["ItemCount"]
    assert metadata["dynamodb_table"] == table
    assert metadata["stream"].startswith("NEW_AND_OLD_IMAGES")
    assert metadata["pitr"].startswith("ENABLED")
