/*
 * The bank and the network in front of it: what each kind of answer of
 * bank-answers.tsv means physically (did this call pay?), independent of
 * how the rules classify it. This is the ground truth the rules are checked
 * against; the classification under test comes from the table.
 *
 *   not sent      refused_connection, connect_timeout: no byte reached the
 *                 bank, nothing paid by this call.
 *   no answer     timeout_after_send, reset_after_send,
 *                 reset_then_resend_refused: the request may have reached
 *                 the bank, which goes on with it whatever the client does
 *                 (it may pay after the client gave up); the client sees
 *                 no answer.
 *   answered      the bank took the key's lock (or answered 409 at once if
 *                 another call held it) and answers when it is done:
 *                   success_body: the key is paid (now or earlier);
 *                   failed_body, failed_body_http_200: the key is not paid
 *                     (a paid key replays success, never failed);
 *                   bare_4xx, bare_4xx_after_resend, status_409, status_425,
 *                     status_429: this call paid nothing (the key may be
 *                     paid from earlier);
 *                   success_body_not_200, bare_5xx, other_body: this call
 *                     may or may not have paid.
 *
 * Per-key serialization: one call per key holds the bank's lock from its
 * arrival to its answer; the bank decides to pay and answers inside it, so
 * "failed" is the key's state at that moment. The bank pays a key at most
 * once.
 */

/* A bare 4xx to the call holding key i's lock: bare_4xx for a first request,
   bare_4xx_after_resend for libcurl's resend (the processor tells them apart:
   its pre-request callback ran twice). */
#define REFUSE(i, a) if :: !w[i].resent -> a = bare_4xx :: w[i].resent -> a = bare_4xx_after_resend fi

/* A processor's call reaches the network (phase CLAIMED -> CALLING or ANSWERED). */
inline send(p) {
  if
  :: w[pr[p].w].busy ->
     printf("MSC: P%d w%d: the bank is busy with the key\n", p, pr[p].w);
     receive(p, status_409)
  :: !w[pr[p].w].busy ->
     w[pr[p].w].busy = 1;
     w[pr[p].w].busyFor = p;
     pr[p].phase = CALLING;
     printf("MSC: P%d w%d: request reaches the bank\n", p, pr[p].w)
  :: receive(p, refused_connection)
  :: receive(p, connect_timeout)
  fi
}

/* The client stops waiting (phase CALLING): its time limit, or a reset
   connection, possibly followed by libcurl's resend being refused. The
   bank's work on the request, if any, goes on. */
inline give_up(p) {
  if
  :: w[pr[p].w].busyFor == p -> w[pr[p].w].busyFor = 0
  :: else
  fi;
  if
  :: receive(p, timeout_after_send)
  :: receive(p, reset_after_send)
  :: receive(p, reset_then_resend_refused)
  fi
}

/* libcurl's silent resend after a reset: a new request for the same key
   while the client still waits. It finds the lock held (409) if the first
   request is still being worked on. */
inline resend(p) {
  if
  :: w[pr[p].w].busyFor == p -> w[pr[p].w].busyFor = 0
  :: else
  fi;
  printf("MSC: P%d w%d: connection reset; libcurl resends\n", p, pr[p].w);
  if
  :: w[pr[p].w].busy -> receive(p, status_409)
  :: else -> w[pr[p].w].busy = 1; w[pr[p].w].busyFor = p; w[pr[p].w].resent = 1
  fi
}

/* The bank finishes the call holding key i's lock: pays or not, answers
   whoever still waits, releases the lock. */
inline bank_answers(i, a) {
  if
  :: !w[i].bankPaid ->
     w[i].bankPaid = 1;
     w[i].payments++;
     printf("MSC: bank pays w%d's key\n", i);
     if
     :: a = success_body
     :: a = success_body_not_200
     :: a = bare_5xx
     :: a = other_body
     fi
  :: !w[i].bankPaid ->
     if
     :: a = failed_body
     :: a = failed_body_http_200
     :: REFUSE(i, a)
     :: a = status_409
     :: a = status_425
     :: a = status_429
     :: a = bare_5xx
     :: a = other_body
     :: a = success_body_not_200
     fi
  :: w[i].bankPaid ->
     if
     :: a = success_body
     :: a = success_body_not_200
     :: REFUSE(i, a)
     :: a = status_409
     :: a = status_425
     :: a = status_429
     :: a = bare_5xx
     :: a = other_body
     fi
  fi;
  w[i].busy = 0;
  w[i].resent = 0;
  if
  :: w[i].busyFor != 0 ->
     receive(w[i].busyFor, a);
     w[i].busyFor = 0
  :: w[i].busyFor != 0 ->
     /* the answer is lost on the way: the client still waits */
     printf("MSC: bank answers %e for w%d; the answer is lost\n", a, i);
     NOTE_LOST;
     w[i].busyFor = 0
  :: w[i].busyFor == 0 ->
     printf("MSC: bank answers %e for w%d to nobody (the client is gone)\n", a, i);
     NOTE_LOST
  fi;
  a = 0
}

active proctype Bank() {
  mtype a;
end:
  do
  :: atomic { w[0].busy -> bank_answers(0, a); checks() }
#if NW > 1
  :: atomic { w[1].busy -> bank_answers(1, a); checks() }
#endif
  od
}
