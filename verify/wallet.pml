/*
 * The withdrawal protocol of the wallet service: one wallet, NW withdrawals,
 * NP processors, the bank, lease expiry, a customer who may cancel or
 * deposit. docs/VERIFY.md says what is proven and under which assumptions.
 *
 * Every step below is one database transaction (atomic, as the store's
 * BEGIN IMMEDIATE transactions are) or one event of the bank or the network.
 * Time is abstracted away: a withdrawal is due whenever no live lease holds
 * it, so "a retry or recheck becomes due" is any later interleaving.
 *
 * Bounds, set by verify/check.sh:
 *   NW        withdrawals (1 or 2), each of AMOUNT, from a wallet with
 *             DEPOSIT, plus one later deposit of 1
 *   LIMIT     attempts (WALLET_MAX_RETRIES + 1); the attempt count
 *             saturates at LIMIT, where every attempt is the last
 *   LIVENESS  the liveness run: at most DISTURB_MAX crashes and lease
 *             losses of a live holder, and the formula below
 * and, to show the known gap of docs/VERIFY.md:
 *   LATE_SEND       a processor may start its call after its lease expired
 */
#include "rules.pml"

#ifndef NW
#define NW 2
#endif
#ifndef LIMIT
#define LIMIT 3
#endif
#define NP 2
#define AMOUNT 2
#define DEPOSIT 3

mtype = { PENDING, PROCESSING, COMPLETED, FAILED, CANCELED };

/* A processor's progress with the withdrawal it claimed. */
#define IDLE     0
#define CLAIMED  1   /* the claim committed; the call not started */
#define CALLING  2   /* waiting for the bank */
#define ANSWERED 3   /* an answer in memory, not yet recorded */

typedef Withdrawal {
  /* the transactions row */
  mtype status;
  byte attempts;        /* saturates at LIMIT */
  bool callOpen;        /* bank_call_open */
  bool mayHavePaid;     /* bank_may_have_paid */
  byte owner;           /* lease_owner: 0 none, else a processor */
  bool expired;         /* lease_until has passed */
  /* the bank, for this withdrawal's idempotency key */
  bool bankPaid;
  byte payments;
  bool busy;            /* a call holds the key's lock */
  byte busyFor;         /* the processor waiting for that call, 0 none */
  bool resent;          /* that call is libcurl's resend */
  /* for the properties */
  bool refunded;
  mtype finalStatus
};

typedef Worker {
  byte phase;
  byte w;               /* the withdrawal claimed */
  bool doubt;           /* the Payout's bankMayHavePaid */
  bool last;            /* attempts >= LIMIT */
  mtype got     /* the classified answer */
};

Withdrawal w[NW];
Worker pr[NP + 1];   /* processors 1..NP; 0 means none */
short balance = DEPOSIT;
short held;
short paidOut;
short deposits = DEPOSIT;

#define final(i) (w[i].status == COMPLETED || w[i].status == FAILED || w[i].status == CANCELED)
#define busyCalling(p) (pr[p].phase == CLAIMED || pr[p].phase == CALLING)

#ifdef LIVENESS
#ifndef DISTURB_MAX
#define DISTURB_MAX 1
#endif
byte disturbances;           /* crashes and leases lost by a live holder */
bool lastDefinite;           /* the latest answer a processor received was the
                                bank's own word (a lost answer resets it) */
#define MAY_DISTURB (disturbances < DISTURB_MAX)
#define DISTURBED disturbances++
#define NOTE_ANSWER(o) lastDefinite = (o == paid || o == declined)
#define NOTE_LOST lastDefinite = 0
#else
#define MAY_DISTURB true
#define DISTURBED skip
#define NOTE_ANSWER(o) skip
#define NOTE_LOST skip
#endif

/* A processor receives answer a (any kind) for its call. */
inline receive(p, a) {
  classify(a, pr[p].got);
  printf("MSC: P%d w%d: %e -> %e\n", p, pr[p].w, a, pr[p].got);
  NOTE_ANSWER(pr[p].got);
  pr[p].phase = ANSWERED
}

/* The invariants, checked after every step. */
inline check_withdrawal(i) {
  /* the bank pays a key at most once */
  assert(w[i].payments <= 1);
  /* never refunded when the bank paid its key (even later) */
  assert(!(w[i].refunded && w[i].bankPaid));
  /* never COMPLETED unless the bank paid */
  assert(w[i].status != COMPLETED || w[i].bankPaid);
  /* a final state never changes */
  if
  :: w[i].finalStatus != 0 -> assert(w[i].status == w[i].finalStatus)
  :: w[i].finalStatus == 0 && final(i) -> w[i].finalStatus = w[i].status
  :: else
  fi
}

inline check_processor(p) {
  /* a processor working on a claim holds its lease alone */
#ifndef LATE_SEND
  assert(!busyCalling(p) || (w[pr[p].w].owner == p && !w[pr[p].w].expired))
#else
  skip
#endif
}

inline checks() {
  assert(balance >= 0);
  /* money is conserved */
  assert(balance + held + paidOut == deposits);
  assert(held == AMOUNT * ((w[0].status == PROCESSING)
#if NW > 1
                         + (w[1].status == PROCESSING)
#endif
                         ));
  check_withdrawal(0);
#if NW > 1
  check_withdrawal(1);
#endif
  check_processor(1);
  check_processor(2);
#ifndef LATE_SEND
  assert(!(busyCalling(1) && busyCalling(2) && pr[1].w == pr[2].w))
#endif
}

#include "bank.pml"

/* Due and held by no live lease. */
#define claimable(i) ((w[i].status == PENDING || w[i].status == PROCESSING) && (w[i].owner == 0 || w[i].expired))

/* Store.claimDue for withdrawal i: one transaction. */
inline claim(p, i) {
  pr[p].w = i;
  if
  :: w[i].status == PENDING && balance >= AMOUNT ->
     balance = balance - AMOUNT;
     held = held + AMOUNT;
     w[i].status = PROCESSING;
     w[i].attempts = 1;
     pr[p].doubt = 0
  :: w[i].status == PENDING && balance < AMOUNT ->
     w[i].status = FAILED;
     printf("MSC: P%d w%d: FAILED insufficient_funds\n", p, i)
  :: w[i].status == PROCESSING ->
     /* a call still open: its processor died mid-call */
     pr[p].doubt = w[i].mayHavePaid || w[i].callOpen;
     w[i].mayHavePaid = pr[p].doubt;
     if
     :: w[i].attempts < LIMIT -> w[i].attempts++
     :: else
     fi
  fi;
  if
  :: w[i].status == PROCESSING ->
     w[i].callOpen = 1;
     w[i].owner = p;
     w[i].expired = 0;
     pr[p].last = (w[i].attempts >= LIMIT);
     pr[p].phase = CLAIMED;
     printf("MSC: P%d w%d: claims it: attempt %d, last %d, in doubt %d\n", p, i, w[i].attempts,
            pr[p].last, pr[p].doubt)
  :: else -> pr[p].w = 0
  fi
}

/* Store.record: the decision of the rules, if p still holds the lease. */
inline record(p, i, d, after, r) {
  if
  :: w[i].owner == p && w[i].status == PROCESSING ->
     decide(pr[p].got, pr[p].doubt, pr[p].last, d, after, r);
     printf("MSC: P%d w%d: records %e (in doubt %d, last %d) -> %e %e\n", p, i,
            pr[p].got, pr[p].doubt, pr[p].last, d, r);
     if
     :: d == complete ->
        w[i].status = COMPLETED;
        held = held - AMOUNT;
        paidOut = paidOut + AMOUNT
     :: d == fail ->
        w[i].status = FAILED;
        held = held - AMOUNT;
        balance = balance + AMOUNT;
        w[i].refunded = 1;
        w[i].mayHavePaid = 0;
        printf("MSC: w%d FAILED and refunded\n", i)
     :: d == retry || d == recheck ->
        w[i].mayHavePaid = after
     fi;
     w[i].owner = 0;
     w[i].expired = 0;
     w[i].callOpen = 0
  :: else ->
     printf("MSC: P%d w%d: lost its lease, records nothing\n", p, i)
  fi;
  d = 0; after = 0; r = 0
}

inline forget(p) {
  pr[p].phase = IDLE;
  pr[p].w = 0;
  pr[p].doubt = 0;
  pr[p].last = 0;
  pr[p].got = 0
}

proctype Processor(byte p) {
  mtype d;
  bool after;
  mtype r;
end:
  do
  :: atomic { pr[p].phase == IDLE && claimable(0) -> claim(p, 0); checks() }
#if NW > 1
  :: atomic { pr[p].phase == IDLE && claimable(1) -> claim(p, 1); checks() }
#endif
  :: atomic { pr[p].phase == CLAIMED -> send(p); checks() }
  :: atomic { pr[p].phase == CALLING -> give_up(p); checks() }
  :: atomic { pr[p].phase == CALLING -> resend(p); checks() }
  :: atomic { pr[p].phase == ANSWERED -> record(p, pr[p].w, d, after, r); forget(p); checks() }
  /* a crash loses all that is in memory; the lease stays until it expires */
  :: atomic { pr[p].phase != IDLE && MAY_DISTURB ->
       printf("MSC: P%d crashes\n", p);
       if
       :: pr[p].phase == CALLING && w[pr[p].w].busyFor == p -> w[pr[p].w].busyFor = 0
       :: else
       fi;
       DISTURBED;
       forget(p);
       checks() }
  od
}

/* A lease expires only once its holder's call has ended: the lease outlasts
   the bank call's time limit. A holder with an answer in hand may still
   lose it (it was slow to record). With LATE_SEND, a holder may also start
   its call after its lease ran out (docs/VERIFY.md, "Known gap"). */
#ifdef LATE_SEND
#define callRunning(p) (pr[p].phase == CALLING)
#else
#define callRunning(p) busyCalling(p)
#endif
#define expirable(i) (w[i].owner != 0 && !w[i].expired && \
  !(pr[w[i].owner].w == i && callRunning(w[i].owner)) && \
  (!(pr[w[i].owner].w == i && pr[w[i].owner].phase == ANSWERED) || MAY_DISTURB))

inline expire(i) {
  if
  :: pr[w[i].owner].w == i && pr[w[i].owner].phase == ANSWERED -> DISTURBED
  :: else
  fi;
  w[i].expired = 1;
  printf("MSC: w%d: P%d's lease expires\n", i, w[i].owner)
}

active proctype Leases() {
end:
  do
  :: atomic { expirable(0) -> expire(0); checks() }
#if NW > 1
  :: atomic { expirable(1) -> expire(1); checks() }
#endif
  od
}

/* The customer cancels a PENDING withdrawal at any moment. */
active proctype Customer() {
end:
  do
  :: atomic { w[0].status == PENDING -> w[0].status = CANCELED; printf("MSC: w0 CANCELED\n"); checks() }
#if NW > 1
  :: atomic { w[1].status == PENDING -> w[1].status = CANCELED; printf("MSC: w1 CANCELED\n"); checks() }
#endif
  od
}

/* and deposits 1 once, at any moment. */
active proctype Depositor() {
  atomic { balance = balance + 1; deposits = deposits + 1; printf("MSC: deposit 1\n"); checks() }
}

init {
  atomic {
    w[0].status = PENDING;
#if NW > 1
    w[1].status = PENDING;
#endif
    run Processor(1);
    run Processor(2)
  }
}

#ifdef LIVENESS
/* If the bank's own word (paid or failed) keeps coming, every withdrawal
   ends COMPLETED, FAILED or CANCELED. */
ltl settles { ([]<> lastDefinite) -> <> (final(0)
#if NW > 1
  && final(1)
#endif
  ) }
#endif
