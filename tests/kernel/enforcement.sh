#!/bin/bash
# Enforcement: learn workload A, then enforce A plus one new action. The workload is bash reading its commands
# from standard input (/root/a.cmds, /root/a-plus.cmds), so both runs execute the same program and differ only
# in what they do. The new action is a redirection of a builtin in the shell itself (it opens /root/data/b.txt,
# which A never opens), so the shell is the task marked untrusted and its next actions (running /bin/cat, a
# redirection) must fail with EPERM. Afterwards the same actions outside the namespace (this script) must
# still work.
. /scenarios/lib.sh

say guarded 40 tsem-stream run -P -w enforcement -o $OUT/a.model -- /bin/bash -s </root/a.cmds >$OUT/learn.log 2>&1
result learn_rc $?
section learn $OUT/learn.log

say guarded 40 tsem-stream run -P -w enforcement -m $OUT/a.model -e --store $OUT/enforce --archive $OUT/enforce.archive --summary json \
  -- /bin/bash -s </root/a-plus.cmds >/tmp/enforce.log 2>&1
result enforce_rc $?
grep '^{"aggregate"' /tmp/enforce.log >$OUT/summary.json
grep -v '^{"aggregate"' /tmp/enforce.log >$OUT/enforce.log
section enforce $OUT/enforce.log
say tsem-stream console --store $OUT/enforce -F >$OUT/forensics.txt
result forensics "$(grep -c . $OUT/forensics.txt)"

echo "## outside the namespace, afterwards"
/bin/cat /root/data/a.txt >/dev/null
result outside_cat_rc $?
read -r line </root/data/b.txt
result outside_read_rc $?
result outside_read "$line"
result invalid_releases "$(invalid_releases)"
