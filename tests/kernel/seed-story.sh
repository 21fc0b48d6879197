#!/bin/bash
# The seed story (README "When enforcement fails"), live: root's interactive bash session is learned, the
# account is used as usual, and the next session is enforced against what was learned. bash reads
# /root/.bash_history (on the ext4 disk, so its content digest counts) when it starts and rewrites it when it
# exits, so the enforced session's very first look at its history is new behaviour: the shell is marked
# untrusted and everything it does after that fails with EPERM ("bash: fork: Operation not permitted").
# `explain` names the cause and the fix, `model rebuild` applies it (a pseudonym for the history file), and two
# more enforced sessions, with a different history each time, run to completion without forensics.
#
# Why a plain session between learning and enforcing: the learned session itself re-reads the history it has
# just written (bash truncates the file to HISTFILESIZE at exit), so a session enforced right after learning
# starts with a history digest the model knows and fails only at its exit, unseen. On a real account the
# history changes between the two, as here.
#
# Each session is a script on standard input of a real `bash -i` (interactive: history on, written at exit).
# Its output goes to /tmp/session.log (the same path every time: the session's standard output is part of its
# events) and is shown between markers; the JSON summary of tsem-stream, printed last, is kept apart in
# $OUT/summaryN.json.
. /scenarios/lib.sh

# session N [RUN OPTIONS]: session N, under `tsem-stream run -P -w seed RUN OPTIONS` when options are given.
session() {
  local n=$1
  shift
  if [ $# -gt 0 ]; then
    say guarded 60 tsem-stream run -P -w seed "$@" -- /bin/bash -i </root/session.sh >/tmp/session.log 2>&1
  else
    say guarded 60 /bin/bash -i </root/session.sh >/tmp/session.log 2>&1
  fi
  result session${n}_rc $?
  grep '^{"aggregate"' /tmp/session.log >$OUT/summary$n.json
  grep -v '^{"aggregate"' /tmp/session.log >$OUT/session$n.log
  section "session $n" $OUT/session$n.log
  if [ -s $OUT/summary$n.json ]; then
    echo "tsem-stream summary: $(grep -o '"untrusted":[0-9]*' $OUT/summary$n.json) verdicts," \
      "$(grep -o '"forensics":[0-9]*' $OUT/summary$n.json | head -1) events"
  fi
  result history_after_$n "$(sha256sum /root/.bash_history | cut -d' ' -f1)"
}

result history_before "$(sha256sum /root/.bash_history | cut -d' ' -f1)"
echo "## 1. learn root's session"
session 1 -o $OUT/seed.model --archive $OUT/learned
result learned_points "$(grep -c '^state ' $OUT/seed.model)"

echo "## 2. an ordinary session, without tsem-stream"
session 2

echo "## 3. enforce the learned model"
session 3 -m $OUT/seed.model -e --store $OUT/enforce3 --summary json
say tsem-stream console --store $OUT/enforce3 -F >$OUT/forensics3.txt
result forensics_3 "$(grep -c . $OUT/forensics3.txt)"

echo "## 4. why"
say tsem-stream explain -m $OUT/seed.model --store $OUT/enforce3 --learned $OUT/learned >$OUT/explain.txt 2>&1
result explain_rc $?
section explain $OUT/explain.txt

echo "## 5. rebuild the model with the pseudonym"
say tsem-stream model rebuild --from $OUT/learned --pseudonym /root/.bash_history -o $OUT/seed-fixed.model \
  >$OUT/rebuild.txt 2>&1
result rebuild_rc $?
section rebuild $OUT/rebuild.txt

for n in 6 7; do
  echo "## $n. enforce the rebuilt model"
  session $n -m $OUT/seed-fixed.model -e --store $OUT/enforce$n --summary json
  say tsem-stream console --store $OUT/enforce$n -F >$OUT/forensics$n.txt
  result forensics_$n "$(grep -c . $OUT/forensics$n.txt)"
done
result invalid_releases "$(invalid_releases)"
