#!/usr/bin/env bash
# A local Azurite blob emulator for trying the Azure storage path by hand (the tests start their own).
# Runs in the foreground, in memory, without telemetry, on 127.0.0.1:${AZURITE_BLOB_PORT:-10000};
# Ctrl-C stops it. In another shell, point the service at it with the printed connection string:
#   AZURE_STORAGE_CONNECTION_STRING='...' make run
# The account and its key are the emulator's documented development account (public; emulator only).
set -euo pipefail
cd "$(dirname "$0")/.."
port="${AZURITE_BLOB_PORT:-10000}"
if [ ! -x node_modules/.bin/azurite-blob ]; then
  npm ci --no-audit --no-fund --loglevel=error
fi
key="Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
echo "AZURE_STORAGE_CONNECTION_STRING='DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=${key};BlobEndpoint=http://127.0.0.1:${port}/devstoreaccount1;'"
exec node_modules/.bin/azurite-blob --blobHost 127.0.0.1 --blobPort "$port" \
  --inMemoryPersistence --skipApiVersionCheck --loose --disableTelemetry
