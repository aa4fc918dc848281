"""Words of the trade that the PII detector must not read as people.

On shipping text spaCy's small NER model and the first-name lists tag ports ("Nhava
Sheva", "Tuas"), vessels ("MSC Anna"), companies ("Sheva Freight LLP") and the words that
open a line of a packing list ("Carton", "Job", "Jan") as PERSON. A name filter needs
the words of the domain; no maintained library lists them (UN/LOCODE has the places but
not the rest, and is 100k rows), so the short lists are written out here.
"""

from __future__ import annotations

# Legal forms and the words of the trade that end a company name.
LEGAL_FORMS = frozenset("""GmbH AG KG LLP LLC Ltd Ltd. Limited Pte Pvt Inc Inc. Corp Corp. Co Co. SA S.A. SL S.L. SAS
SARL Srl S.r.l. SpA S.p.A. BV B.V. NV N.V. AB ASA AS A/S Oy Oyj FZE FZCO FZ-LLC DMCC PLC plc LLP. JSC OOO Bhd Sdn
KGaA UG SE Pty Group Holdings Trading Logistics Shipping Lines Freight Forwarding Forwarders Exports Imports Industries
Enterprises Traders Corporation Company Electronics Textiles Components Apparel Foods Alimentos Maschinenbau Marine
Metals Chemicals Pharma Pharmaceuticals Motors Systems Technologies Solutions Partners International Global Worldwide
Agencies Agency Carriers Lines Terminals Warehousing Supply Manufacturing Mills Exim Overseas""".split())

# Container lines and vessel-name prefixes: "MSC Anna", "Maersk Elba", "Ever Ace".
CARRIERS = frozenset("""MSC Maersk CMA CGM ONE HMM Cosco COSCO Hapag Hapag-Lloyd Ever Evergreen OOCL Yang Ming ZIM
Wan Hai PIL Kota Hyundai Mol MOL NYK APL Seaspan Matson Hamburg Sud Safmarine Sealand Emirates""".split())

INCOTERMS = frozenset("EXW FCA FAS FOB CFR CIF CPT CIP DAP DPU DDP DAT DDU".split())

# Words that head a line or a field of a trade document; capitalised, they look like names.
DOCUMENT_WORDS = frozenset(w.lower() for w in """Carton Cartons Job Lot Batch Pallet Pallets Crate Case Cases Drum
Drums Bale Bales Bag Bags Roll Rolls Seal Marks Mark Gate Berth Dock Master Voyage Vessel Consignee Consignor Shipper
Notify Remit Beneficiary Bank Account Total Net Gross Origin Packing Freight Invoice Container Place Port Terminal
Depot Warehouse Carrier Agent Broker Importer Exporter Buyer Seller Declarant Surety Duty Tariff Heading Item Line
Qty Quantity Weight Volume Description Goods Unit Units Card Payment Reference Booking Release Entry Manifest
Kontoinhaber Empfänger Absender Destinatario Remitente Expéditeur Destinataire EORI IBAN SWIFT BIC Shipment
Consignment Delivery Discharge Loading Receipt Transit Transshipment Customs Excise Permit Licence License
Certificate Attestation Pcs Pieces HS HTS CN TARIC MRN UCR AWB MAWB HAWB ETA ETD POL POD Reclassify Classify Classification
Aadhaar UIDAI NRIC FIN PAN SSN NINO Passport Visa Emirates ID EID
USD EUR INR SGD AED GBP CNY JPY CHF SAR""".split())

MONTH_ABBREVIATIONS = frozenset("Jan Feb Mar Apr Jun Jul Aug Sep Sept Oct Nov Dec".split())

# Seaports, airports and trade hubs that are also given names or surnames somewhere, or
# that spaCy reads as people. Not every place: the context rules (after "via", an Incoterm,
# "port of") cover the rest.
PLACES = frozenset("""Nhava Sheva|JNPT|Tuas|Jebel Ali|Port Klang|Klang|Felixstowe|Antwerp|Rotterdam|Hamburg|Busan|
Laem Chabang|Colombo|Mundra|Chennai|Piraeus|Algeciras|Valencia|Gdansk|Jeddah|Khalifa|Khalifa Port|Salalah|Savannah|
Long Beach|Manzanillo|Santos|Durban|Mombasa|Tanjung Pelepas|Tanjung Priok|Yantian|Ningbo|Qingdao|Kaohsiung|
Haiphong|Hai Phong|Chittagong|Chattogram|Karachi|Le Havre|Genoa|Genova|Bremerhaven|Bremen|Southampton|Tilbury|
Pipavav|Hazira|Kandla|Deendayal|Cochin|Kochi|Tuticorin|Visakhapatnam|Vizag|Haldia|Kolkata|Mumbai|Shanghai|
Shenzhen|Guangzhou|Nansha|Tianjin|Xiamen|Dalian|Hong Kong|Singapore|Pasir Panjang|Keppel|Yokohama|Kobe|Nagoya|
Osaka|Tokyo|Incheon|Gwangyang|Marseille|Fos|Barcelona|Bilbao|Sines|Lisbon|Leixoes|Gioia Tauro|Trieste|Koper|
Rijeka|Constanta|Ambarli|Mersin|Izmir|Istanbul|Gothenburg|Aarhus|Zeebrugge|Dunkirk|Duisburg|Liverpool|Immingham|
London Gateway|Dublin|Houston|Oakland|Tacoma|Seattle|Vancouver|Prince Rupert|Montreal|Halifax|Norfolk|Charleston|
Baltimore|Miami|Lazaro Cardenas|Veracruz|Colon|Balboa|Cartagena|Callao|Buenos Aires|Paranagua|Itajai|Dar es Salaam|
Lagos|Apapa|Tema|Abidjan|Dakar|Tangier|Tanger Med|Port Said|Damietta|Alexandria|Dammam|Hamad|Sohar|Duqm|Aqaba|
Umm Qasr|Bandar Abbas|Manila|Cebu|Batangas|Jakarta|Surabaya|Semarang|Belawan|Penang|Pasir Gudang|Bangkok|Yangon|
Cat Lai|Cai Mep|Da Nang|Sihanoukville|Auckland|Tauranga|Sydney|Melbourne|Brisbane|Fremantle|Changi|Heathrow|
Schiphol|Frankfurt|Leipzig|Liege|Anchorage|Memphis|Louisville|Sharjah|Ajman|Fujairah|Abu Dhabi|Dubai|Doha|Muscat|
Riyadh|Kuwait|Shuwaikh|Hamriyah|Mina Zayed|Mina Rashid|Jurong|Sembawang|Tuas South|Nava Sheva|Ennore|Kattupalli|
Krishnapatnam|Kamarajar|Paradip|Mormugao|Mangalore|Vallarpadam|Vizhinjam|Delhi|Tughlakabad|Patparganj|Dadri|
Ludhiana|Nagpur|Bengaluru|Bangalore|Hyderabad|Ahmedabad|Pune|Noida|Gurugram|Gurgaon|Taloja|Bhiwandi|Vapi|Peenya|
Ambattur|Sriperumbudur|Haridwar|Madrid|Zaragoza|Sevilla|Seville|Lyon|Milan|Milano|Basel|Munich|Rotterdam Maasvlakte|
Maasvlakte|Eemshaven|Klaipeda|Riga|Tallinn|Helsinki|Kotka|Gdynia|Szczecin|Novorossiysk|Ust-Luga|Poti|Batumi|
Odesa|Odessa""".replace("\n", "").split("|"))
