"""Sample input rows of the example workloads: short, realistic contexts and questions."""

MAP_REDUCE = [
    {"context": "The Treaty of Westphalia (1648) ended the Thirty Years' War in the Holy Roman "
                "Empire and the Eighty Years' War between Spain and the Dutch Republic. It "
                "recognised the sovereignty of the member states of the Empire over their own "
                "territories and religious affairs.",
     "question": "Which principle is most closely associated with the Peace of Westphalia? "
                 "(A) collective security (B) state sovereignty (C) free trade (D) papal authority"},
    {"context": "Aspirin irreversibly inhibits cyclooxygenase-1 in platelets, blocking "
                "thromboxane A2 synthesis for the platelet's lifetime of about 8 to 10 days.",
     "question": "Why does a single low dose of aspirin affect platelet function for about a "
                 "week? (A) it is stored in fat (B) platelets cannot make new enzyme "
                 "(C) it is excreted slowly (D) it activates thromboxane"},
]

DEBATE = [
    {"question": "A bat and a ball cost $1.10 in total. The bat costs $1.00 more than the ball. "
                 "How much does the ball cost?"},
    {"question": "If it takes 5 machines 5 minutes to make 5 widgets, how long would it take "
                 "100 machines to make 100 widgets?"},
]

REFLECTION = [
    {"background": "HTTP/2 multiplexes many streams over one TCP connection, so a lost TCP "
                   "packet stalls every stream until it is retransmitted. HTTP/3 runs over QUIC, "
                   "which implements streams in user space on top of UDP, so loss on one stream "
                   "does not block the others.",
     "question": "Why does HTTP/3 perform better than HTTP/2 on lossy mobile networks?"},
    {"background": "Write-ahead logging requires that a change's log record reach durable "
                   "storage before the changed data page does. After a crash, the database "
                   "replays the log to redo committed changes and undo uncommitted ones.",
     "question": "How does write-ahead logging let a database recover after a power failure?"},
]

_REPORT_A = (
    "The city council opened the 2024 budget review on 4 March with a projected deficit of 12 "
    "million euros.",
    "Transit ridership rose 9 percent year on year, but fare revenue rose only 3 percent because "
    "of the new reduced-fare pass.",
    "The finance director proposed deferring the depot renovation, saving 5 million euros in 2024.",
    "Councillors from the eastern districts objected that the depot is already over capacity.",
    "On 18 March the council adopted a 2 percent property-tax increase, raising 4 million euros.",
    "The remaining gap of 3 million euros will be covered by drawing on the reserve fund.",
    "An external audit of the reserve fund is scheduled for September 2024.",
)
_REPORT_B = (
    "The harbour authority reported container volume of 1.8 million TEU for 2023, down 4 percent.",
    "The decline came mainly from fewer transshipment calls after two carriers changed routes.",
    "Rail share of hinterland transport rose from 31 to 35 percent after the new freight link opened.",
    "Average truck waiting time at the gates fell from 74 to 52 minutes with the booking system.",
    "Shore power is now available at six of eleven cruise berths.",
    "The authority plans to dredge the main channel to 17 metres by 2026 at a cost of 210 million.",
    "Environmental groups have challenged the dredging permit in court; a ruling is due in June.",
)

ITERATIVE = [dict(title="City council budget review 2024",
                  **{f"chunk_{k}": _REPORT_A[k - 1] for k in range(1, 7)}),
             dict(title="Harbour authority annual report 2023",
                  **{f"chunk_{k}": _REPORT_B[k - 1] for k in range(1, 7)})]

PARALLEL = [dict(topic="How the council closed the 2024 budget gap, and the risks that remain",
                 **{f"chunk_{k}": _REPORT_A[k - 1] for k in range(1, 8)}),
            dict(topic="The harbour's competitive position and its infrastructure plans",
                 **{f"chunk_{k}": _REPORT_B[k - 1] for k in range(1, 8)})]


def _trading_row(ticker, date, facts):
    row = {"ticker": ticker, "date": date}
    for desk in ("fundamentals", "market", "news", "social"):
        items = facts[desk]
        count = 6 if desk in ("fundamentals", "market") else 9
        for i in range(1, count + 1):
            row[f"{desk}_{i}"] = items[(i - 1) % len(items)]
    return row


TRADING = [
    _trading_row("NVDA", "2024-05-23", {
        "fundamentals": [
            "Q1 FY2025 revenue 26.0 billion USD, up 262% year on year; data center 22.6 billion.",
            "Gross margin 78.4%, up from 64.6% a year earlier.",
            "Operating cash flow 15.3 billion USD; 7.7 billion returned via buybacks and dividends.",
            "Director sold 120,000 shares on 2024-05-20 under a 10b5-1 plan.",
            "Consensus FY2025 EPS estimate raised from 2.30 to 2.68 USD after results.",
            "Ten-for-one stock split announced, effective 2024-06-07."],
        "market": [
            "Closed at 1,037.99 USD on 2024-05-23, up 9.3% on the day after earnings.",
            "Traded between 860 and 960 USD over the prior two weeks.",
            "50-day moving average 890 USD; 200-day moving average 650 USD.",
            "14-day RSI 71, in overbought territory.",
            "Volume 83 million shares, about twice the 30-day average.",
            "Heavy call buying in June 1,100 strikes; put/call ratio 0.62."],
        "news": [
            "Reuters: Nvidia forecasts Q2 revenue of 28 billion USD, above estimates of 26.6 billion.",
            "CEO says demand for the next-generation Blackwell chips exceeds supply into 2025.",
            "Analysts at two banks raise price targets to 1,200 USD.",
            "Report: US weighs further limits on AI chip exports to the Middle East.",
            "Hyperscalers reiterate rising 2024 capital expenditure on AI infrastructure."],
        "social": [
            "Retail forums dominated by split-related posts; sentiment strongly positive.",
            "Several widely shared posts warn of a 'sell the news' pullback.",
            "Mentions up 340% day over day; 78% classified bullish.",
            "Influential semiconductor analyst posts concern about customer concentration."],
    }),
    _trading_row("KO", "2024-04-30", {
        "fundamentals": [
            "Q1 2024 net revenue 11.3 billion USD, up 3%; organic revenue up 11%.",
            "Operating margin 21.0% versus 30.7%, hit by a one-off bottler refranchising charge.",
            "Free cash flow 0.5 billion USD after a 6 billion IRS tax deposit.",
            "No insider purchases or sales reported in the past 90 days.",
            "Consensus 2024 EPS 2.82 USD; company guides comparable EPS growth of 4-5%.",
            "Currency headwind of 4-5% to full-year comparable EPS expected."],
        "market": [
            "Closed at 61.78 USD on 2024-04-30, up 1.4% after earnings.",
            "Range of 59.5 to 62.2 USD over the prior month.",
            "Trading just above its 50-day (60.9) and 200-day (59.7) moving averages.",
            "14-day RSI 58, neutral.",
            "Volume in line with the 30-day average of 14 million shares.",
            "Implied volatility 14%, near one-year lows."],
        "news": [
            "Company raises full-year organic revenue growth guidance to 8-9%.",
            "Price increases across markets offset flat unit case volume in North America.",
            "Tax court dispute with the IRS over transfer pricing continues; appeal pending.",
            "Zero-sugar products grow double digits; management cites health trends."],
        "social": [
            "Dividend-investor communities praise the 62nd consecutive dividend increase.",
            "Low discussion volume; sentiment mildly positive.",
            "Some posts question pricing power as consumers trade down."],
    }),
]

TRIAGE = [
    {"customer": "Dana Whitfield",
     "ticket": "I was charged $99 on March 1st but I downgraded to Starter on February 27th. "
               "Can I get the difference back?"},
    {"customer": "Luis Ortega",
     "ticket": "Since this morning every query to our production database times out after 30 "
               "seconds and the dashboard shows the instance as degraded."},
    {"customer": "Priya Raman",
     "ticket": "A colleague left the company. How do I remove her from our team and give her "
               "databases to someone else?"},
]
