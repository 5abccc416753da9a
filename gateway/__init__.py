"""realtime-gateway: multi-tenant gateway for the OpenAI Realtime API and Azure OpenAI realtime."""
