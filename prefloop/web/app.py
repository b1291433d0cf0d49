"""The Gradio Blocks app (`prefloop web`): Arena, Leaderboard and Dashboard tabs.

Handlers are thin: the arena's rules live in `arena.py`, the numbers in `dashboard.py` and
`queries.py`, the figures in `figures.py`. Every handler turns a problem a person can act on
(`PrefloopError`) into a message on the page instead of an error modal.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

# Gradio asks its own servers for version news and sends telemetry unless told not to; prefloop sends
# traffic to nothing beyond the machine.
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import gradio as gr  # noqa: E402
import pandas as pd  # noqa: E402

from prefloop.analytics.store import connect  # noqa: E402
from prefloop.errors import PrefloopError, one_line  # noqa: E402
from prefloop.settings import Settings  # noqa: E402
from prefloop.web import queries  # noqa: E402
from prefloop.web.arena import Arena, Vote  # noqa: E402
from prefloop.web.dashboard import (  # noqa: E402
    dashboard_figures, gather_dashboard, gather_leaderboard, leaderboard_figures, utc_midnight_ms, DAY_MS)
from prefloop.web.settings import WebSettings  # noqa: E402
from prefloop.web.sources import LoopSources  # noqa: E402

log = logging.getLogger("prefloop.web")

DEFAULT_MODE = "production vs newest"
NAMED_MODE = "named versions"
DASHBOARD_PLOTS = ("win_rate", "thumbs_up_rate", "pairs", "drift", "trigger", "rollout", "registry")
# System fonts: the theme's bundled web fonts lack glyphs that then fall back letter by letter.
THEME_FONTS = ["Liberation Sans", "DejaVu Sans", "system-ui", "sans-serif"]
CSS = """
#arena-answers textarea { font-size: 15px; }
.prefloop-note { color: #555; }
"""


@dataclass
class WebContext:
    settings: Settings
    web: WebSettings
    arena: Arena


def _user(request: gr.Request | None) -> str:
    """The arena's user id: the login when there is one, else the browser session."""
    if request is None:
        return "arena:anonymous"
    return f"arena:{getattr(request, 'username', None) or request.session_hash or 'anonymous'}"


def collected_today(ctx: WebContext) -> str:
    try:
        store = connect(ctx.settings)
        try:
            n = queries.pairs_since(store, utc_midnight_ms())
        finally:
            store.close()
    except PrefloopError as exc:
        return f"Preferences collected today: unavailable ({one_line(exc, 300)})"
    return f"**Preferences collected today: {n} / {ctx.web.daily_target}** (all sources, UTC day)"


def build_app(ctx: WebContext) -> gr.Blocks:
    web = ctx.web
    with gr.Blocks(title="prefloop", analytics_enabled=False) as demo:
        gr.Markdown("## prefloop — compare versions, see the loop")
        with gr.Tabs():
            with gr.Tab("Arena", id="arena", elem_id="tab-arena"):
                today = gr.Markdown(elem_id="arena-today")
                with gr.Row():
                    mode = gr.Radio([DEFAULT_MODE, NAMED_MODE], value=DEFAULT_MODE, label="Which versions",
                                    elem_id="arena-mode", scale=2)
                    first = gr.Dropdown([], label="version 1", visible=False, elem_id="arena-first", scale=1)
                    second = gr.Dropdown([], label="version 2", visible=False, elem_id="arena-second", scale=1)
                question = gr.Textbox(label="Your question", placeholder="Ask something…", lines=2,
                                      elem_id="arena-question")
                ask = gr.Button("Ask both models", variant="primary", elem_id="arena-ask")
                with gr.Row(elem_id="arena-answers"):
                    answer_a = gr.Textbox(label="Model A", lines=8, interactive=False, elem_id="arena-answer-a")
                    answer_b = gr.Textbox(label="Model B", lines=8, interactive=False, elem_id="arena-answer-b")
                with gr.Row():
                    vote_buttons = {
                        Vote.A: gr.Button("A is better", interactive=False, elem_id="vote-a"),
                        Vote.B: gr.Button("B is better", interactive=False, elem_id="vote-b"),
                        Vote.TIE: gr.Button("Tie", interactive=False, elem_id="vote-tie"),
                        Vote.BOTH_BAD: gr.Button("Both are bad", interactive=False, elem_id="vote-both-bad"),
                    }
                status = gr.Markdown(elem_id="arena-status")
                new_round = gr.Button("New round", elem_id="arena-new-round")
                battle = gr.State("")

            with gr.Tab("Leaderboard", id="leaderboard", elem_id="tab-leaderboard") as leaderboard_tab:
                refresh_board = gr.Button("Refresh", size="sm", elem_id="leaderboard-refresh")
                board_note = gr.Markdown(elem_id="leaderboard-note")
                board_table = gr.Dataframe(interactive=False, elem_id="leaderboard-table",
                                           headers=["rank", "version", "rating", "interval", "battles", "wins", "losses"])
                ratings_plot = gr.Plot(elem_id="plot-ratings", label="ratings")
                matrix_plot = gr.Plot(elem_id="plot-win-matrix", label="win fractions")

            with gr.Tab("Dashboard", id="dashboard", elem_id="tab-dashboard") as dashboard_tab:
                refresh_dash = gr.Button("Refresh", size="sm", elem_id="dashboard-refresh")
                dash_note = gr.Markdown(elem_id="dashboard-note")
                plots = {name: gr.Plot(elem_id=f"plot-{name.replace('_', '-')}", label=name.replace("_", " "))
                         for name in DASHBOARD_PLOTS}

        # --- arena ---
        buttons = list(vote_buttons.values())

        def versions_choices():
            names = [v.version for v in LoopSources(ctx.settings).versions()]
            return gr.update(choices=names), gr.update(choices=names)

        def on_mode(choice: str):
            named = choice == NAMED_MODE
            return gr.update(visible=named), gr.update(visible=named)

        def on_ask(text: str, choice: str, v1: str | None, v2: str | None, request: gr.Request):
            locked = [gr.update(interactive=False)] * len(buttons)
            try:
                fight = ctx.arena.start(text, _user(request), "named" if choice == NAMED_MODE else "default",
                                        v1 or "", v2 or "")
            except PrefloopError as exc:
                return ["", "", "", f"**Problem:** {one_line(exc, 300)}", *locked]
            note = "Both answers are in. Which is better? The names show after your vote."
            return [fight.battle_id, fight.a.text, fight.b.text, note, *[gr.update(interactive=True)] * len(buttons)]

        def on_vote(vote: Vote):
            def handler(battle_id: str):
                locked = [gr.update(interactive=False)] * len(buttons)
                try:
                    result = ctx.arena.vote(battle_id, vote)
                except PrefloopError as exc:
                    return [f"**Problem:** {one_line(exc, 300)}", collected_today(ctx), *[gr.update()] * len(buttons)]
                if result.accepted:
                    text = f"Thanks! Your vote: **{result.vote.label}**. {result.reveal()}"
                else:
                    text = f"This battle already has its vote (**{result.vote.label}**); nothing was added. {result.reveal()}"
                return [text, collected_today(ctx), *locked]
            return handler

        def on_new_round():
            return ["", "", "", "", "", *[gr.update(interactive=False)] * len(buttons)]

        demo.load(lambda: collected_today(ctx), outputs=today)
        demo.load(versions_choices, outputs=[first, second])
        mode.change(on_mode, inputs=mode, outputs=[first, second])
        ask_event = dict(fn=on_ask, inputs=[question, mode, first, second],
                         outputs=[battle, answer_a, answer_b, status, *buttons])
        ask.click(**ask_event)
        question.submit(**ask_event)
        for vote, button in vote_buttons.items():
            # Locked in the browser at once (a second click cannot even be sent); the server refuses it anyway.
            button.click(lambda: [gr.update(interactive=False)] * len(buttons), outputs=buttons, queue=False).then(
                on_vote(vote), inputs=battle, outputs=[status, today, *buttons])
        new_round.click(on_new_round, outputs=[battle, question, answer_a, answer_b, status, *buttons])

        # --- leaderboard ---
        columns = ["rank", "version", "rating", f"{web.confidence:.0%} interval", "battles", "wins", "losses"]

        def on_leaderboard():
            try:
                data = gather_leaderboard(ctx.settings, web)
            except PrefloopError as exc:
                return [f"**Problem:** {one_line(exc, 300)}", pd.DataFrame(columns=columns), None, None]
            figs = leaderboard_figures(data, web)
            table = pd.DataFrame([[i + 1, r.version, round(r.rating), f"{r.lower:.0f} – {r.upper:.0f}", r.battles,
                                   r.wins, r.losses] for i, r in enumerate(data.ratings)], columns=columns)
            battles = sum(o.count for o in data.outcomes)
            note = (f"{battles} CHOICE battle(s) between two different versions (arena votes and apps' choices), "
                    f"Bradley–Terry with {web.bootstrap_rounds} bootstrap rounds.")
            return [note, table, figs["ratings"], figs["win_matrix"]]

        board_outputs = [board_note, board_table, ratings_plot, matrix_plot]
        refresh_board.click(on_leaderboard, outputs=board_outputs)
        leaderboard_tab.select(on_leaderboard, outputs=board_outputs)

        # --- dashboard ---
        def on_dashboard():
            since = utc_midnight_ms() - (web.dashboard_days - 1) * DAY_MS
            try:
                data = gather_dashboard(ctx.settings, since)
            except PrefloopError as exc:
                return [f"**Problem:** {one_line(exc, 300)}", *[None] * len(DASHBOARD_PLOTS)]
            figs = dashboard_figures(data, web)
            note = f"Last {web.dashboard_days} day(s), UTC."
            if data.problems:
                note += " Unavailable: " + "; ".join(data.problems)
            return [note, *[figs[name] for name in DASHBOARD_PLOTS]]

        dash_outputs = [dash_note, *plots.values()]
        refresh_dash.click(on_dashboard, outputs=dash_outputs)
        dashboard_tab.select(on_dashboard, outputs=dash_outputs)

        if web.refresh_s > 0:
            timer = gr.Timer(web.refresh_s)
            timer.tick(lambda: collected_today(ctx), outputs=today)
    return demo


def theme() -> gr.themes.Base:
    return gr.themes.Default(font=THEME_FONTS, font_mono=["DejaVu Sans Mono", "monospace"])


__all__ = ["WebContext", "build_app", "collected_today", "theme", "CSS"]
