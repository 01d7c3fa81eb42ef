#!/usr/bin/env bash
# ANCHOR: body
echo "from the snippet"
# ANCHOR_END: body
exit 1
