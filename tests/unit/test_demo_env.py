"""The demo's processes sign with the demo's own key: none of the user's AWS credentials,
profiles or credential sources reach them (they talk to the local AWS over plain HTTP)."""

from __future__ import annotations

import os
from unittest import mock

import boto3

from dynamo_cdc.aws import Clients
from dynamo_cdc.demo import DEMO_ACCESS_KEY_ID, DEMO_SECRET_ACCESS_KEY, demo_env, demo_settings

USER_ENV = {
    "AWS_ACCESS_KEY_ID": "AKIAUSERSENTINEL0000",
    "AWS_SECRET_ACCESS_KEY": "user-secret-sentinel",
    "AWS_SESSION_TOKEN": "user-token-sentinel",
    "AWS_SECURITY_TOKEN": "user-token-sentinel",
    "AWS_PROFILE": "production",
    "AWS_DEFAULT_PROFILE": "production",
    "AWS_SHARED_CREDENTIALS_FILE": "/home/user/.aws/credentials",
    "AWS_CONFIG_FILE": "/home/user/.aws/config",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI": "http://169.254.170.23/v1/credentials",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI": "/v2/credentials/sentinel",
    "AWS_CONTAINER_AUTHORIZATION_TOKEN": "container-token-sentinel",
    "AWS_WEB_IDENTITY_TOKEN_FILE": "/var/run/secrets/token",
    "AWS_ROLE_ARN": "arn:aws:iam::111122223333:role/production",
    "AWS_ENDPOINT_URL": "https://dynamodb.eu-west-1.amazonaws.com",
    "DYNAMO_CDC_AWS_ACCESS_KEY_ID": "AKIAUSERSENTINEL0001",
    "DYNAMO_CDC_AWS_SECRET_ACCESS_KEY": "user-secret-sentinel-2",
    "DYNAMO_CDC_AWS_SESSION_TOKEN": "user-token-sentinel-2",
}


def test_demo_children_get_the_demos_key_and_none_of_the_users_aws_settings(
    tmp_path, monkeypatch
) -> None:
    for name, value in USER_ENV.items():
        monkeypatch.setenv(name, value)
    (tmp_path / "home").mkdir()
    env = demo_env("http://127.0.0.1:4566", str(tmp_path / "lake"), tmp_path / "home")
    assert {k: env[k] for k in USER_ENV if env.get(k) == USER_ENV[k]} == {}
    assert not any(value in env.values() for value in USER_ENV.values())
    with mock.patch.dict(os.environ, env, clear=True):  # what a child's boto3 finds
        credentials = boto3.session.Session().get_credentials().get_frozen_credentials()
    assert (credentials.access_key, credentials.secret_key, credentials.token) == (
        DEMO_ACCESS_KEY_ID,
        DEMO_SECRET_ACCESS_KEY,
        None,
    )


def test_the_demos_own_clients_sign_with_the_demos_key_whatever_the_user_has(
    monkeypatch,
) -> None:
    for name, value in USER_ENV.items():
        if name not in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE"):  # no such profile here
            monkeypatch.setenv(name, value)
    session = Clients(demo_settings("http://127.0.0.1:4566")).session
    credentials = session.get_credentials().get_frozen_credentials()
    assert (credentials.access_key, credentials.token) == (DEMO_ACCESS_KEY_ID, None)
