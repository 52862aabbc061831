"""DynamoDB JSON to Arrow: the one conversion contract of the export and the stream readers.

Two implementations stand behind it: the reference (plain Python, the specification) and the
native one (the C readers of :mod:`dynamo_cdc.convert._native`, sources in
``dynamo_cdc/convert/_native/``, loaded by :mod:`dynamo_cdc.convert.native`).
"""
