"""No string a user can send makes the readers of user text raise: the prompt parser and everything derived
from its tree, the infotext parser, the migration policy and the token counter. Strings come from the whole of
Unicode, lone surrogates included (a JSON body to the app can carry `\\ud800`), mixed with the syntax that the
parsers branch on, so hypothesis reaches every branch."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.models import presets
from bridge.syntax.infotext import format_infotext, parse_infotext
from bridge.syntax.policy import MigrationPolicy, apply_policy, migrate_parameters
from bridge.syntax.prompt import (chunk_texts, embeddings, leaves, networks, parse, plain_text, replace_leaves,
                                  segments, walk, weighted_spans)
from bridge.syntax.tokens import count_tokens, token_budget

SYNTAX = list("()[]{}<>:|\\,.-_ \n\r\t0123456789") + [
    "<lora:", "<hypernet:", "<lyco:", "AND", "BREAK", "EasyNegative", "embedding:", "__", ":1.2", ":0.5]", "::",
    "Negative prompt:", "Steps: 20, Sampler: Euler a", "Size: 512x768", "Clip skip: 2", "Hypernet: ", '"', "\r\n"]
ANY_CHAR = st.characters(min_codepoint=0, max_codepoint=0x10FFFF, blacklist_categories=())  # surrogates too
user_text = st.lists(st.one_of(st.sampled_from(SYNTAX), ANY_CHAR), max_size=80).map("".join)
POLICIES = [MigrationPolicy(), MigrationPolicy(networks="keep", embeddings="keep", syntax="novelai", normalize=False)]


@settings(max_examples=600, deadline=None)
@given(user_text)
def test_no_prompt_makes_the_parser_or_its_walks_raise(s):
    p = parse(s)
    assert p.serialize() == s
    list(walk(p.nodes)), leaves(p.nodes), weighted_spans(p.nodes), networks(p.nodes), embeddings(p.nodes)
    segments(p.nodes), chunk_texts(p.nodes), plain_text(p.nodes)
    replace_leaves(p, str.upper)
    token_budget(s, truncates=False)


@settings(max_examples=600, deadline=None)
@given(user_text)
def test_no_prompt_makes_the_policy_raise(s):
    for policy in POLICIES:
        apply_policy(s, policy)


@settings(max_examples=600, deadline=None)
@given(user_text)
def test_no_text_makes_the_infotext_parser_raise(s):
    info = parse_infotext(s)
    format_infotext(info)
    migrate_parameters(info.params, presets.pipeline("sd2-base"))
    info.clip_skip, info.size


@settings(max_examples=300, deadline=None)
@given(user_text)
def test_no_text_makes_the_token_counter_raise(s):
    assert count_tokens(s) >= 0
