"""The pykka actors of the bridge: supervisor, tokens, gateway, scope, runner, delivery."""
